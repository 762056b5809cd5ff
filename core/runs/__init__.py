"""Orchestration: running a recipe (`runner`), resolving the models a trainer takes as input (`inputs`),
evaluating and exporting what a run produced (`models`).
Plugins never import it; the commands (`faceauth.commands`) and Python callers (`faceauth.run`,
`faceauth.evaluate`, `faceauth.export_checkpoint`) do."""
