"""``CrossModalityDataModule``: labelled source + unlabelled target for training (the target labelled
too with ``target_train_labels``, for an oracle), target test split for validation and test, a folder of
images for prediction (METHOD.md §2, docs/ARCHITECTURE.md).

Training samples are indexed by their global sample number ``i`` (0, 1, 2, ... over the whole run):
every random choice of sample ``i`` (source image, uniform or by RCS; target image; crops; flips)
comes from ``numpy.random.SeedSequence([seed, i])``. A batch is therefore a function of
``(seed, batch number)`` only, whatever the number of workers.

Exact resume: the datamodule counts the training batches that reach the model (its
``on_before_batch_transfer`` hook, which Lightning calls for the batch being trained on, not for
prefetched ones) and stores the count in its ``state_dict``. Lightning saves that in every
checkpoint and restores it before training resumes; the training sampler then continues from the
next batch number, in every epoch. Nothing is needed from the LightningModule; but should it
override ``on_before_batch_transfer`` too, Lightning calls only the datamodule's (with a warning):
put such code in ``on_after_batch_transfer`` instead. With several processes (DDP) each shards
the sample numbers by rank itself (``ResumableSampler``). The training loader is a
``ResumableDataLoader``: having ``state_dict``/``load_state_dict``, it is what Lightning recognises
as a resumable loader, so a resume from a mid-epoch checkpoint is not warned about.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from madm_pl.data.datasets import (
    CityscapesDataset,
    DataOption,
    SegmentationDataset,
    UnlabelledImages,
    build_target_dataset,
    target_dataset_class,
)
from madm_pl.data.io import ImageScaling
from madm_pl.data.rcs import RareClassSampler, load_or_compute_class_counts
from madm_pl.data.reference import ReferenceShare, reference_share
from madm_pl.data.resumable import ResumableDataLoader, ResumableSampler
from madm_pl.data.samples import CrossModalityTrainDataset, ResizedDataset
from madm_pl.data.transforms import TrainTransform
from madm_pl.labels import Task, get_task


def _logged(dataset: SegmentationDataset) -> SegmentationDataset:
    """``dataset``, its frame selection (DSEC: frames kept and dropped) logged when it has one."""
    selection = getattr(dataset, "frame_selection", lambda: None)()
    if selection is not None:
        rank_zero_info(selection)
    return dataset


def _class_and_init_args(target_kind: str | dict[str, Any] | None) -> tuple[str | None, dict[str, Any]]:
    """``data.target_kind`` as (kind or dotted class path, the dataset's own keyword arguments): a string,
    or ``{"class_path": ..., "init_args": {...}}`` for a dataset with options of its own."""
    if not isinstance(target_kind, dict):
        return target_kind, {}
    unknown = sorted(set(target_kind) - {"class_path", "init_args"})
    if "class_path" not in target_kind or unknown:
        raise ValueError(
            f"data.target_kind {target_kind!r}: give a kind, a dotted class path, or "
            "{class_path: <dotted path>, init_args: {...}}"
        )
    return str(target_kind["class_path"]), dict(target_kind.get("init_args") or {})


def _size(value: Any, option: str) -> tuple[int, int]:
    values = tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{option} must be [height, width] with positive integers, got {value!r}")
    return values  # type: ignore[return-value]


class CrossModalityDataModule(LightningDataModule):
    """Source (Cityscapes) + target modality data of one MADM task (METHOD.md sections 1-2).

    Batches (docs/ARCHITECTURE.md):

    - train: ``{"source_image": (B,3,h,w) float32 in [0,1], "source_label": (B,h,w) int64 task ids
      or 255, "target_image": (B,3,h,w) float32 in [0,1]}``, (h,w) = ``crop_size``; plus
      ``"target_label": (B,h,w) int64 task ids or 255`` only with ``target_train_labels``.
    - val / test (the target test split at ``test_size``): ``{"image": (B,3,H,W) float32 in [0,1],
      "label": (B,H,W) int64, "name": list[str]}``; for DELIVER, FMB and DSEC (the target datasets
      whose ``reference_protocol`` is True) also ``"in_reference_share": (B,) bool``, the images the
      reference's published numbers score (``reference_share``; not for the ``"folder"`` kind, which the
      reference never ran).
    - predict (every image under ``predict_root`` at ``test_size``): ``{"image": (B,3,H,W),
      "name": list[str] relative paths with the suffix, "size": (B,2) int64 original (H,W),
      "error": list[str]}``; ``error`` is ``""``, or why an unreadable file is skipped (its image is
      zeros).

    Target and predict images with more than 8 bits per pixel (16-bit PNGs of a thermal or depth
    camera, 32-bit TIFFs) are mapped to [0,1] by one rule in training, validation, test and predict
    alike (``io.ImageScaling``): ``image_range`` or ``image_percentiles``, or without either the full
    16-bit range.

    Args:
        task: ``"rgb2depth"``, ``"rgb2infrared"`` or ``"rgb2event"`` (``labels.TASKS``).
        source_root: Cityscapes root (``leftImg8bit/``, ``gtFine/``).
        target_root: target dataset root.
        source_resize: (H,W) the source is resized to (paper: 512x1024).
        crop_size: (H,W) of the training crops of source and target (paper: 512x512).
        target_resize: (H,W) the target is resized to (paper: depth 712x712, infrared 512x683,
            event 512x768).
        test_size: (H,W) of val/test/predict images and labels (paper: 512x512).
        target_kind: the target dataset: a kind (``"deliver"``, ``"fmb"``, ``"dsec"``, or ``"folder"``
            for your own images, see ``datasets.ImageFolderDataset``), the dotted path of a
            ``datasets.TargetDataset`` subclass of your own, or ``{class_path: ..., init_args: {...}}``
            with that dataset's own keyword arguments; None = the task's dataset. The class checks
            that it fits the task and the options below it takes (``TargetDataset.init_options``).
        train_file_list: the reference's ``*_train.json`` (``source_data`` for Cityscapes,
            ``target_data.second_modality`` for the target), or None to scan the folders.
        test_file_list: the reference's ``*_test.json`` (``target_data``), or None to scan.
        label_map: YAML label map of the ``"folder"`` kind's labels (passed to the datasets that take it,
            ``data_options``).
        dsec_frames: ``"all"`` (every DSEC frame a scan finds) or ``"reference"`` (only the frames of
            the reference's lists: train the even frames from 000002, test every frame from 000001;
            the counts kept and dropped are printed); only for the ``"dsec"`` kind (its ``frames``),
            ignored with a file list (the list is the selection).
        target_train_labels: load the target training labels and add ``target_label`` ((B,h,w) int64,
            255 ignored) to the training batches, cropped and flipped with the target image; needed by
            ``model.mode: oracle``; real FMB, DELIVER and DSEC ship train labels (layouts in
            ``datasets``; the ``"folder"`` kind reads ``train/images/`` + ``train/labels/``). False
            leaves the batches exactly as without the option.
        batch_size: training batch size per process.
        val_batch_size: val/test/predict batch size.
        num_workers: DataLoader worker processes.
        pin_memory: DataLoader ``pin_memory``.
        persistent_workers: keep workers between epochs (needs ``num_workers > 0``).
        epoch_length: training samples per epoch and process; None = the number of source images.
            Sampling is with replacement, so this only sets when epoch-end hooks run.
        rcs: rare class sampling of the source (else uniform source images).
        rcs_temperature: RCS softmax temperature T.
        rcs_min_pixels: RCS candidate threshold, in pixels of the stored (full-resolution) labels.
        rcs_min_crop_ratio: RCS crop test: more than ``ratio * min_pixels`` pixels of the class in the
            crop of the resized label; 0 disables the redraws.
        seed: base seed of the training samples.
        predict_root: folder of images for ``predict``.
        image_range: ``[low, high]`` raw values mapped to 0 and 1 (clipped) for target and predict
            images with more than 8 bits per pixel; None with no ``image_percentiles`` = the full
            16-bit range ``[0, 65535]``.
        image_percentiles: ``[p_low, p_high]``: instead, per image, its percentiles ``p_low`` and
            ``p_high`` (e.g. ``[1, 99]``) map to 0 and 1.
    """

    def __init__(
        self,
        task: str,
        source_root: str,
        target_root: str,
        source_resize: tuple[int, int],
        crop_size: tuple[int, int],
        target_resize: tuple[int, int],
        test_size: tuple[int, int],
        target_kind: str | dict[str, Any] | None = None,
        train_file_list: str | None = None,
        test_file_list: str | None = None,
        label_map: str | None = None,
        dsec_frames: str = "all",
        target_train_labels: bool = False,
        batch_size: int = 2,
        val_batch_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        epoch_length: int | None = None,
        rcs: bool = True,
        rcs_temperature: float = 0.01,
        rcs_min_pixels: int = 3000,
        rcs_min_crop_ratio: float = 0.5,
        seed: int = 42,
        predict_root: str | None = None,
        image_range: tuple[float, float] | None = None,
        image_percentiles: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._task = get_task(task)
        self.image_scaling = ImageScaling(
            fixed=None if image_range is None else tuple(image_range),
            percentiles=None if image_percentiles is None else tuple(image_percentiles),
        )
        # The target dataset's class owns its options and their checks (datasets.TargetDataset): its
        # kind fits the task, the options it takes are valid, none it does not take is set.
        kind, self.target_init_args = _class_and_init_args(target_kind)
        self.target_class = target_dataset_class(self._task.target_dataset if kind is None else kind)
        self.target_kind = self.target_class.kind
        self.target_options = (
            DataOption("label_map", label_map, "data.label_map"),
            DataOption("dsec_frames", dsec_frames, "data.dsec_frames"),
        )
        self.target_class.init_options(self._task, self.target_options, self.target_init_args)
        self.source_resize = _size(source_resize, "data.source_resize")
        self.crop_size = _size(crop_size, "data.crop_size")
        self.target_resize = _size(target_resize, "data.target_resize")
        self.test_size = _size(test_size, "data.test_size")
        for option, resize in (
            ("data.source_resize", self.source_resize),
            ("data.target_resize", self.target_resize),
        ):
            if self.crop_size[0] > resize[0] or self.crop_size[1] > resize[1]:
                raise ValueError(
                    f"data.crop_size {self.crop_size} is larger than {option} {resize}; reduce it"
                )
        for option, value in (("data.batch_size", batch_size), ("data.val_batch_size", val_batch_size)):
            if value < 1:
                raise ValueError(f"{option} must be >= 1, got {value}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if persistent_workers and num_workers == 0:
            raise ValueError("data.persistent_workers=true needs data.num_workers > 0; set one or the other")
        if epoch_length is not None and epoch_length < batch_size:
            raise ValueError(f"data.epoch_length={epoch_length} is smaller than data.batch_size={batch_size}")
        if rcs_temperature <= 0:
            raise ValueError(f"data.rcs_temperature must be > 0, got {rcs_temperature}")
        if rcs_min_pixels < 0 or rcs_min_crop_ratio < 0:
            raise ValueError("data.rcs_min_pixels and data.rcs_min_crop_ratio must be >= 0")
        self.source_root = source_root
        self.target_root = target_root
        self.train_file_list = train_file_list
        self.test_file_list = test_file_list
        self.label_map = label_map
        self.dsec_frames = dsec_frames
        self.target_train_labels = target_train_labels
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.epoch_length = epoch_length
        self.rcs = rcs
        self.rcs_temperature = rcs_temperature
        self.rcs_min_pixels = rcs_min_pixels
        self.rcs_min_crop_ratio = rcs_min_crop_ratio
        self.seed = seed
        self.predict_root = predict_root
        self.train_batches_seen = 0
        self.train_dataset: CrossModalityTrainDataset | None = None
        self.val_dataset: ResizedDataset | None = None
        self.predict_dataset: ResizedDataset | None = None
        #: The reference's rank-0 share of the test split (set up with val/test; None for "folder").
        self.reference_share: ReferenceShare | None = None

    # ------------------------------------------------------------------------------ properties
    @property
    def task(self) -> Task:
        """The ``labels.Task``."""
        return self._task

    @property
    def num_classes(self) -> int:
        """Number of classes of the task (11 or 9)."""
        return self._task.num_classes

    # ------------------------------------------------------------------------------- datasets
    def source_dataset(self, strict: bool = True) -> CityscapesDataset:
        """The labelled source: Cityscapes train under ``source_root`` (or ``train_file_list``).

        Args:
            strict: raise when images have no label file; False keeps them out and names them in
                the dataset's ``unmatched`` (``madm-pl prepare`` lists every bad file at once).

        Raises:
            FileNotFoundError: no Cityscapes tree (or listed file) under ``source_root``.
        """
        return CityscapesDataset(
            self.source_root,
            "train",
            self._task,
            self.train_file_list,
            option="data.source_root",
            strict=strict,
        )

    def target_dataset(self, split: str, strict: bool = True) -> SegmentationDataset:
        """The target ``"train"`` split (labelled with ``target_train_labels``) or ``"test"`` split, of
        ``target_kind`` under ``target_root`` (or the file lists), images scaled by ``image_range`` /
        ``image_percentiles``.

        Args:
            split: ``"train"`` or ``"test"``.
            strict: as in ``source_dataset``.

        Raises:
            FileNotFoundError: the split's folders (or listed files) are missing under ``target_root``.
        """
        return build_target_dataset(
            self._task,
            self.target_root,
            split,
            kind=self.target_class.kind,
            file_list=self.train_file_list if split == "train" else self.test_file_list,
            options=self.target_options,
            init_args=self.target_init_args,
            labelled=True if split == "train" and self.target_train_labels else None,
            image_scaling=self.image_scaling,
            strict=strict,
        )

    def has_test_split(self) -> bool:
        """Whether the target has a test split (the dataset class's ``has_test_split``: always, but for
        a ``"folder"`` target without a test file list and without ``test/images/``)."""
        return self.target_class.has_test_split(self.target_root, self.test_file_list)

    def _rcs_sampler(self, source: CityscapesDataset) -> RareClassSampler:
        counts = load_or_compute_class_counts(self.source_root, source.label_paths)
        return RareClassSampler(counts, self.rcs_temperature, self.rcs_min_pixels)

    def prepare_data(self) -> None:
        """Compute the RCS statistics once (rank 0), writing ``<source_root>/madm_rcs_stats.json``."""
        if self.rcs:
            self._rcs_sampler(self.source_dataset())

    def setup(self, stage: str) -> None:
        """Build the datasets of ``stage`` (``"fit"``, ``"validate"``, ``"test"``, ``"predict"``)."""
        if stage == "fit":
            source = self.source_dataset()
            target = _logged(self.target_dataset("train"))
            self.train_dataset = CrossModalityTrainDataset(
                source,
                target,
                TrainTransform(self.source_resize, self.crop_size),
                TrainTransform(self.target_resize, self.crop_size),
                seed=self.seed,
                epoch_length=self.epoch_length or len(source),
                rcs=self._rcs_sampler(source) if self.rcs else None,
                rcs_min_pixels=self.rcs_min_pixels,
                rcs_min_crop_ratio=self.rcs_min_crop_ratio,
            )
        if stage in ("fit", "validate", "test"):
            if self.has_test_split():
                test = _logged(self.target_dataset("test"))
                # The reference ran only on its three datasets: no reference share for your own images.
                if self.target_class.reference_protocol:
                    self.reference_share = reference_share(test.relative_paths(), test.file_list is not None)
                self.val_dataset = ResizedDataset(
                    test, self.test_size, predict=False, share=self.reference_share
                )
            elif stage != "fit":
                raise FileNotFoundError(
                    f"no test split under data.target_root='{self.target_root}': expected test/images/ and "
                    "test/labels/ (see ImageFolderDataset); add them to validate or test"
                )
        if stage == "predict":
            if self.predict_root is None:
                raise ValueError("predict needs data.predict_root: a folder of images to segment")
            images = UnlabelledImages(
                self.predict_root, option="data.predict_root", image_scaling=self.image_scaling
            )
            self.predict_dataset = ResizedDataset(images, self.test_size, predict=True)

    # ---------------------------------------------------------------------------- dataloaders
    def _loader(
        self, dataset: Dataset, batch_size: int, loader: type[DataLoader] = DataLoader, **kwargs: Any
    ) -> DataLoader:
        return loader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Training batches, resumable (see the module docstring)."""
        if self.train_dataset is None:
            raise RuntimeError("call setup('fit') before train_dataloader()")
        rank, world_size = (
            (0, 1) if self.trainer is None else (self.trainer.global_rank, self.trainer.world_size)
        )
        sampler = ResumableSampler(
            self.train_dataset,
            num_batches=len(self.train_dataset) // self.batch_size,
            batch_size=self.batch_size,
            start_batch=lambda: self.train_batches_seen,
            rank=rank,
            world_size=world_size,
        )
        return self._loader(
            self.train_dataset,
            self.batch_size,
            ResumableDataLoader,
            sampler=sampler,
            drop_last=True,
            datamodule=self,
        )

    def val_dataloader(self) -> DataLoader | list:
        """The target test split at ``test_size`` (an empty list for a ``"folder"`` target without one)."""
        if self.val_dataset is None:
            if not self.has_test_split():
                return []
            raise RuntimeError("call setup('validate') before val_dataloader()")
        return self._loader(
            self.val_dataset, self.val_batch_size, shuffle=False, sampler=self._evaluation_sampler()
        )

    def _evaluation_sampler(self) -> UnrepeatedDistributedSampler | None:
        """With several processes, process ``rank`` scores images ``rank, rank + world_size, ...``.

        Every test image is scored exactly once, so the confusion matrix summed over the processes
        equals the one-process matrix (METHOD.md §6). Lightning's default evaluation sampler would
        pad the split by repeating images when its size is not a multiple of the process count. The
        processes may then run one batch more or less; that is safe in evaluation (no collective per
        batch; DDP syncs buffers at most on the first one), but every process needs one image.
        """
        if self.trainer is None or self.trainer.world_size == 1:
            return None
        world_size = self.trainer.world_size
        if len(self.val_dataset) < world_size:
            raise ValueError(
                f"the test split under data.target_root='{self.target_root}' has {len(self.val_dataset)} "
                f"images for {world_size} processes; evaluate with fewer devices (trainer.devices)"
            )
        return UnrepeatedDistributedSampler(
            self.val_dataset, num_replicas=world_size, rank=self.trainer.global_rank, shuffle=False
        )

    def test_dataloader(self) -> DataLoader:
        """Same as ``val_dataloader``."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """Every image under ``predict_root`` at ``test_size``, sorted by path."""
        if self.predict_dataset is None:
            raise RuntimeError("call setup('predict') before predict_dataloader()")
        return self._loader(self.predict_dataset, self.val_batch_size, shuffle=False)

    # ------------------------------------------------------------------------------- resume
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count the training batches that reach the model (for exact resume); batch unchanged."""
        if self.trainer is not None and self.trainer.training:
            self.train_batches_seen += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume the same sample sequence."""
        return {
            "train_batches_seen": self.train_batches_seen,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue after the batches of the checkpoint; warn if seed or batch size changed."""
        self.train_batches_seen = int(state_dict.get("train_batches_seen", 0))
        for key in ("seed", "batch_size"):
            if key in state_dict and state_dict[key] != getattr(self, key):
                rank_zero_warn(
                    f"resuming with data.{key}={getattr(self, key)} but the checkpoint used "
                    f"{state_dict[key]}: the training samples will not continue the same sequence"
                )
