"""The MADM training step as pure functions, one file per step of the method (METHOD.md §4-§6).

In the order ``MADMModule.training_step`` runs them:

1. ``ema``: the EMA teacher (``ema_alpha``, ``ema_update``).
2. ``segmentation``: the pixel-weighted cross-entropy on source and mixed labels (``segmentation_loss``).
3. ``lplr``: latent palette label regression (``painted_label``, ``lplr_loss``).
4. ``classmix``: ClassMix masks and the paste (``classmix_masks``, ``mix``).
5. ``dplg``: the teacher's diffusion timestep under DPLG (``draw_dplg_t0``, ``dplg_timestep``).
6. ``pseudo_label``: teacher pseudo-labels and their weight q (``pseudo_labels``: the one
   confidence rule; ``pseudo_label``, ``mixed_weight``).
7. ``augment``: the DACS strong augmentation of the mixed image, with kornia (``strong_augment``).
8. ``schedule``: the learning-rate factor (``lr_factor``).
9. ``metrics``: the mIoU rule and the pseudo-labels' pixel accuracy (``miou_from_confusion``,
   ``pixel_accuracy``).

No Lightning, no file I/O, no global random state: every random draw takes an explicit
``torch.Generator``, and tensors are created on the device of the inputs. The behaviour was checked
against the reference implementation (XiaRho/MADM); see ``docs/REFERENCE_NOTES.md`` for the verified
facts and ``docs/DEVIATIONS.md`` for where madm-pl deliberately differs.
"""
