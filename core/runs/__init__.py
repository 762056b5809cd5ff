"""Orchestration: running a recipe (`runner`), evaluating and exporting what a run produced (`models`).
Plugins never import it; the commands (`faceauth.commands`) and Python callers (`faceauth.run`,
`faceauth.evaluate`, `faceauth.export_checkpoint`) do."""
