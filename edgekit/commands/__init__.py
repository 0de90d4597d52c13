"""Click commands beyond build/verify/inspect (`run`, `bundle`, `doctor`) and what every command shares.

`output` holds the console (where edgekit's own lines go), the one JSON object every `--json` exit
prints, and the error-to-exit-status mapping; `session` keeps third-party output of a build in a log
and turns SIGTERM into an interrupt. Each command parses, calls one `edgekit.api` function, and
prints; heavy imports happen inside the call.
"""
