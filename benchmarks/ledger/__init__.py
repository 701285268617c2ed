"""The GPU memory ledger (issue 24): one MADM iteration on ``meta``, its device memory predicted.

- :mod:`.iteration`: the module of a memory mode on ``meta``, driven as Lightning drives it.
- :mod:`.emulation`: CUDA autocast (bf16) and CUDA's attention kernels, emulated above autograd.
- :mod:`.tracker`: the storages operators make, by category and phase.
- :mod:`.allocator`: the CUDA caching allocator's block rules, so that *allocated* counts blocks.
- :mod:`.calibration`: the GPU-only workspaces and the measured figures the ledger is checked on.
- :mod:`.backbone_rows`: the prediction of ``benchmarks/gpu_backbone.py``'s table.

The command is ``python -m benchmarks.memory_ledger``.
"""
