#!/usr/bin/env bash
# One prepared check for a GPU machine (about 8 minutes): install faceauth into that machine's own Python
# without touching its packages (such machines reach no package registry and already hold every
# dependency), run the suite in parallel, the IResNet-50 step ceiling against whole training epochs, the
# export time, the liveness texture branch on the GPU, and print one summary table. Run from the repository root:
#   bash benchmarks/gpu_check.sh            (logs go to $OUT when set, else to a temporary folder)
# CI never runs this; it needs no GPU to start, but its figures mean something only on one.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export FACEAUTH_CACHE="$out/cache"

{ "$py" -m pip install -q --no-deps --no-build-isolation -e . -e examples/faceauth-example-plugin 2>&1 | tail -n 3; } \
  >"$out/install.log"
"$py" - >"$out/versions.txt" 2>&1 <<'EOF'
import platform, torch, torchvision, onnxruntime, cv2
print(f"python {platform.python_version()} torch {torch.__version__} torchvision {torchvision.__version__} "
      f"onnxruntime {onnxruntime.__version__} opencv {cv2.__version__}")
print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device",
      f"bf16={torch.cuda.is_available() and torch.cuda.is_bf16_supported()}")
EOF

workers=$(( $(nproc) > 4 ? $(nproc) - 2 : 2 ))
start=$(date +%s)
timeout 270 "$py" -m pytest -q -n "$workers" -p no:cacheprovider \
  >"$out/pytest.log" 2>&1
suite_rc=$?
suite_s=$(( $(date +%s) - start ))

timeout 60 "$py" benchmarks/bench_gpu.py --batch 256 --channels-last >"$out/ceiling_fp32.log" 2>&1 || true
timeout 200 "$py" benchmarks/bench_gpu.py --batch 256 --channels-last --end-to-end --images 30000 \
  --workers "$workers" --epochs 2 --data "$out/bench-data" >"$out/end_to_end.log" 2>&1
e2e_rc=$?
timeout 90 "$py" benchmarks/bench_export.py --backbone iresnet50 >"$out/export.log" 2>&1
export_rc=$?
# The liveness texture branch (LBP in float64, scatter-add histograms) on the GPU: equal to the CPU's?
timeout 60 "$py" - >"$out/texture.log" 2>&1 <<'EOF'
import time, torch
from faceauth.plugins.trainers.texture import LbpDescriptor, TextureOptions
device = "cuda" if torch.cuda.is_available() else "cpu"
descriptor = LbpDescriptor(TextureOptions(weight=1.0), (128, 128), (0.5,) * 3, (0.5,) * 3)
x = torch.rand(64, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
reference = descriptor(x)
descriptor, moved = descriptor.to(device), x.to(device)
same = torch.equal(descriptor(moved).cpu(), reference)
if device == "cuda":
    torch.cuda.synchronize()
start = time.perf_counter()
for _ in range(10):
    descriptor(moved)
if device == "cuda":
    torch.cuda.synchronize()
print(f"texture branch on {device}: equal to the CPU's {same}, {(time.perf_counter() - start) * 100:.1f} ms a batch of 64")
EOF

echo "== faceauth GPU check =="
cat "$out/versions.txt"
printf '%-28s %s\n' "suite (rc $suite_rc, ${suite_s}s)" "$(tail -n 1 "$out/pytest.log")"
grep -E "^(FAILED|ERROR) " "$out/pytest.log" | head -n 15
printf '%-28s %s\n' "step ceiling" "$(grep -m1 'samples/s' "$out/ceiling_fp32.log")"
echo "end to end (rc $e2e_rc):"
tail -n 4 "$out/end_to_end.log"
printf '%-28s %s\n' "export (rc $export_rc)" "$(tail -n 1 "$out/export.log")"
printf '%-28s %s\n' "texture branch" "$(tail -n 1 "$out/texture.log")"
echo "logs: $out"
