"""Pruning helpers for the prune stage: structural channel removal, sparse masks, recovery, counting.

`structured` removes whole channels with torch-pruning's DepGraph (smaller, faster artifacts for
ExecuTorch and ONNX Runtime); `sparse` zeroes single weights (or n of every m) so that Core ML can
store them sparse; `recovery` fine-tunes the pruned model back toward the float one; `counting`
measures parameters, MACs, channels and sparsity for the manifest.
"""
