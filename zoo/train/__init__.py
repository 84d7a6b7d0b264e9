r"""Training and fine-tuning of the zoo's models on an smssynth store.

One loop serves ``smssynth train`` (a new model), ``smssynth finetune`` (weights and architecture
from a checkpoint or a registry name, some parameters optionally frozen) and ``--resume``::

    store -> SmsDataset -> normalize_batch -> [crop_readout] -> fold coils -> model -> SmsLoss
                                                         \-> denormalize -> RSS -> NMSE/PSNR/SSIM

Both the loss and the metrics compare the root-sum-of-squares of the model's (virtual) coil
images with the store's ``target``, the magnitude image from the DICOM, in every coil mode
(:mod:`zoo.data`: ``virtual``, ``compressed`` to K coils, ``per-coil``).

The package, in the order a run meets it (everything public is importable from ``zoo.train``):

* :mod:`~zoo.train.config` -- :class:`TrainConfig`, :class:`RunConfig`, the ``--config`` YAML
  (:func:`load_yaml_config`), flags > YAML > defaults (:func:`resolve_run_config`), resume
  (:func:`resumed_run_config`); wrong values are named by key and expected type.
* :mod:`~zoo.train.splits` -- which examples train and which validate.
* :mod:`~zoo.train.batch` -- the readout crop, coil folding (the input normalisation,
  :func:`normalize_batch`, is :mod:`zoo.data`'s, re-exported here).
* :mod:`~zoo.train.params` -- the parent of a fine-tuning run, frozen parameters, AMP convolutions.
* :mod:`~zoo.train.schedule` -- the learning rate of every optimizer step.
* :mod:`~zoo.train.loop` -- :func:`fit` and validation (:func:`evaluate_examples`).
* :mod:`~zoo.train.state`, :mod:`~zoo.train.logs` -- the resume state and the logs.

Optimisation
------------
Adam (``lr``, ``weight_decay``), optional gradient-norm clipping (``grad_clip``), and:

* a learning-rate schedule over the optimizer steps (``schedule``: ``constant``, the default,
  ``cosine`` to ``min_lr`` over the run's steps, or ``step``: times ``gamma`` every
  ``step_size`` steps), after an optional linear warm-up of ``warmup_steps``
  (:mod:`zoo.train.schedule` has the formulas);
* gradient accumulation (``accumulate`` = N): N micro-batches of ``batch_size`` make one optimizer
  step, each micro-batch's mean loss weighted by its share of the step's examples, so the
  gradient is that of the mean loss over ``batch_size * N`` examples -- the gradient of one batch
  that size -- at the memory of one micro-batch.  ``max_steps``, ``step`` in the logs and the
  schedule count optimizer steps;
* early stopping (``early_stop`` = P, off by default): the run ends after the P-th epoch in a
  row without a better mean val PSNR; it is said when it happens (also under ``--quiet``),
  recorded as ``stopped_early`` in the last checkpoint's metadata and the resume state, and
  ``checkpoints/best`` holds the best epoch's weights (as it always does).  A resumed run that
  had stopped early does nothing unless the patience is raised (``early_stop`` is resumable).

Run directory
-------------
* ``config.json`` -- everything resolved (the ``train`` section holds every :class:`TrainConfig`
  field: schedule, warm-up, accumulation, early stop included), the split, the effective batch
  (``batch_size * accumulate * ranks``), the learning-rate schedule with its step count
  (``lr_schedule``), versions.
* ``log.csv`` -- one row per epoch: ``epoch, step, lr`` (of the epoch's last step), the mean
  train loss terms ``train_loss, train_mse, train_ssim, train_tv`` (over the epoch's examples and
  ranks), ``val_nmse, val_psnr, val_ssim`` (means; empty without validation), ``seconds`` (the
  epoch's wall time, validation included).
* ``steps.csv`` -- one row per optimizer step, written as the step ends: ``step`` (1, 2, ...,
  global), ``epoch``, ``lr`` (the rate that step used), the loss terms ``loss, mse, ssim, tv``
  (the step's mean over its examples, accumulated micro-batches together; rank 0's examples
  under DDP), ``seconds`` (the step's wall time, data loading included).  Plain CSV with a
  header, readable while the run goes on (``pandas.read_csv``, a spreadsheet).
* ``tensorboard/`` -- only when ``torch.utils.tensorboard`` is importable (tensorboard is not a
  dependency): ``train/<term>`` and ``train/lr`` per step, ``val/<metric>`` per epoch.
* ``baseline.json`` -- zero-filled metrics on the same val examples.
* ``checkpoints/epoch-NNN``, ``last`` and ``best`` (by val PSNR), each a
  :func:`zoo.checkpoint.save_checkpoint` pair (``.safetensors`` + ``.json``); the metadata's
  ``training`` records the optimizer with its schedule, the effective batch, the train settings,
  the early stop.
* ``checkpoints/last.state.{safetensors,json}`` -- the resume state (:mod:`zoo.train.state`): the
  optimizer's tensors and the torch RNG states in safetensors; its scalars, param groups, epoch,
  step, best PSNR, the schedule, the early stop and the state file's SHA-256 in JSON (no pickle);
  the step is checked against the weights' metadata on resume.

Resume (:func:`resumed_run_config`): the run's ``config.json`` fixes everything except
:data:`RESUMABLE` (``epochs``, ``max_steps``, ``early_stop``, ``num_workers``, ``device``) and the
store's path.  A resumed run drops the rows of ``log.csv`` and ``steps.csv`` after the step it
resumes from.  The learning rate is a function of the optimizer step alone, so a run interrupted
and resumed with the same settings follows the same rates; raising ``epochs`` or ``max_steps``
lengthens a cosine schedule, and the run says so.

Determinism: shuffling is ``DistributedSampler(seed)`` with ``set_epoch`` (also for one process),
fresh masks and crops derive from (seed, epoch, micro-batch, rank), model initialisation from the
seed under ``torch.random.fork_rng``; a resumed run replays the remaining batches of its epoch
(from the first micro-batch of a step), so on CPU it ends with the same weights as an
uninterrupted one.

Distributed (``torchrun``; :mod:`zoo.train.distributed`): DDP over ranks, each rank trains on its
``DistributedSampler`` shard and validates on its share of the val examples; losses and
metrics are gathered; rank 0 alone writes.  ``batch_size`` is per rank.  Accumulated
micro-batches skip the gradient all-reduce (``no_sync``) but for the step's last.

CPU: the small convolutions of these models scale poorly over threads, and on a CPU shared with
other jobs oversubscribed OpenMP threads spin: there ``OMP_NUM_THREADS=1`` was ~3-10x faster per
step than 2 threads on a 2-core box (torchrun sets it to 1 by default).

Mixed precision (``amp``, CUDA only): the convolutions -- nearly all the FLOPs -- run under
``torch.autocast(float16)`` with a ``GradScaler`` and return float32; the complex physics
(FFTs, data consistency) stays complex64, because cuFFT in half precision needs power-of-two
sizes and complex bfloat16 does not exist.  With accumulation the scaler scales every
micro-batch's loss and unscales, clips and steps once per optimizer step.

bfloat16 (``precision: bfloat16``, ``--precision bfloat16``; CPU or CUDA): the CRNN blocks and
the 2D+time convolutions compute in bfloat16 -- activations, hidden states and per-pass kernel
copies -- while the parameters, their gradients, Adam's state and the complex physics stay
float32/complex64 (:func:`zoo.train.params.set_compute_dtype`); bfloat16 has float32's range,
so no loss scaling.  On a CPU with AMX (Intel Sapphire Rapids and later) oneDNN's bfloat16
convolutions are several times faster than float32 ones; on a CPU without AVX512-BF16 they are
emulated and slower, so it is off by default.  The checkpoint is float32 and loads, evaluates and
reconstructs in float32; the run's precision is recorded in its metadata (``training.train``).

Why our own loop, not Lightning Fabric
--------------------------------------
Fabric (``lightning-fabric``) takes over device placement, the DDP launch and wrapping,
precision and collective calls, and leaves the loop to the user -- the part of this package that
is not the loop.  Measured (issue #14) with ``lightning-fabric`` 2.6.6 on the 2-core CPU box, one
thread, the tiny SMS-CRNN of the tests (4 filters, 2 iterations, 31 x 27 x 6 frames) with the
same batches, two runs of 3 x 12 and 3 x 25 steps each:

* speed: medians of 22.9 and 17.4 ms per step with our loop, 20.5 and 24.5 ms with Fabric
  (``precision="32-true"``), interleaved runs on a machine shared with other jobs -- no
  difference the noise lets through.  Fabric's own cost, probed on an 8 x 8 ``Linear`` step, is
  19-30 us per step (134 -> 153 us, 84 -> 113 us), 0.1-0.2 % of a model step; the weights after
  the same steps were bit-identical.  ``import lightning_fabric`` adds 1.5-1.9 s to every
  command's start (torch already imported).
* lines (our count, not a port): Fabric would replace about 100 of :mod:`zoo.train.distributed`'s 127 (rank environment,
  device choice, process group, barrier, all-reduce; not the gather of Python objects, which it
  lacks) and about 15 in the loop (DDP wrapping, ``no_sync``, moving batches), for about 15 of
  Fabric set-up: ~100 lines net, ~6 % of the ~1,800 lines of this package and
  :mod:`zoo.train.distributed`.
* what it would not replace: the resume state (``Fabric.save``/``load`` are ``torch.save``/
  ``torch.load``, pickle, which the project refuses for anything it reads back), the replay of an
  interrupted epoch, the CSV logs (Fabric's ``CSVLogger`` writes ``version_N/metrics.csv`` and
  does not cut a resumed run's rows), the schedule, the accumulation weighting, early stopping,
  and mixed precision: Fabric's ``16-mixed`` autocasts the whole forward, the physics included,
  where this loop autocasts only the convolutions, so the ``GradScaler`` would stay ours.

A new dependency of ~17,000 lines (lightning-fabric + lightning-utilities) and 1.5 s per start
for ~100 lines of our own, with no speed to gain, does not pay; the loop stays ours.  Revisit if
FSDP or TPU support is wanted: that is where Fabric's strategies carry real weight.
"""

from zoo.data import NORM_QUANTILE, denormalize, example_scale, normalize_batch
from zoo.metrics import nmse, psnr, ssim
from zoo.models import build_model, count_parameters, model_config_dict
from zoo.train.batch import crop_readout, fold_coils, rss_magnitude
from zoo.train.config import (RESUMABLE, SCHEDULES, RunConfig, TrainConfig, load_yaml_config, model_config_dict_of,
                              resolve_run_config, resumed_run_config)
from zoo.train.loop import METRICS, FitResult, evaluate_examples, fit
from zoo.train.losses import SmsLoss
from zoo.train.params import freeze_parameters, load_parent
from zoo.train.schedule import LrSchedule
from zoo.train.splits import MIN_COMPLETE, check_complete, split_examples
from zoo.train.state import STATE_SUFFIX, load_state, save_state

__all__ = [
    "NORM_QUANTILE", "FitResult", "LrSchedule", "RunConfig", "TrainConfig", "crop_readout", "denormalize",
    "example_scale", "fold_coils", "rss_magnitude",
    "RESUMABLE", "SCHEDULES", "evaluate_examples", "fit", "freeze_parameters", "load_parent", "load_state",
    "load_yaml_config", "normalize_batch", "resolve_run_config", "resumed_run_config", "save_state",
    "split_examples",
]
