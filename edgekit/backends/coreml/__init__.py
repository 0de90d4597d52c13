"""The Core ML backend: conversion (convert.py), the Linux stand-in (proxy.py, proxy_ops.py) and every
private coremltools API in one module (_private.py). Nothing heavy is imported here."""

from edgekit.backends.coreml.backend import CoreMLBackend

__all__ = ["CoreMLBackend"]
