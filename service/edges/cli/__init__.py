"""The command-line edge: `importctl` (`main`), its live `watch`, the worker `supervisor`
behind `importctl worker`, and the programs behind `make run` (`demo`) and `make serve`
(`serve`). It imports the shared edge modules, `actors` (to run workers in-process) and the
layers below, never the REST or gRPC edge. Only this edge prints.
"""
