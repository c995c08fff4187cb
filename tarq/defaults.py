"""Defaults shared by the library, the CLI and the daily job (torch-free, so the CLI starts
fast): the one place each constant is written. The gate's and continuous training's values
were chosen from measurements; ``benchmarks/README.md`` ("Continuous training") has the figures."""

from __future__ import annotations

# Every model the library can train: TARQ, the paper's baselines and two ablations.
MODEL_NAMES = (
    "tarq",
    "tt",
    "inttower",
    "mvke",
    "ta",
    "tarq_no_align",
    "tarq_no_teacher_align",
    "pooled",
)
# The ablations of the paper's Table 1 (trained by the daily job only on request).
ABLATIONS = ("tarq_no_align", "tarq_no_teacher_align")
# What the daily job trains and compares by default: TARQ and the four baselines.
DAILY_MODELS = ("tarq", "tt", "inttower", "mvke", "ta")
# Sanity baselines beside the paper's TT in the model comparison (trained on request).
SANITY_BASELINES = ("pooled",)
# Sizes of the built-in demo logs (tarq.data.demo.PRESETS has what each one means).
PRESETS = ("tiny", "small", "medium", "large")
DEMO_SEED = 7
# The first day of the demo window the documented figures were measured on (docs/results.md,
# benchmarks/README.md, docs/demo-data.md): `tarq demo-data --start-date 2026-10-01`, for the
# 22-day presets the same as `--end-date 2026-10-22`. Without a date the logs end yesterday
# (UTC); another window gives other logs of the same world (its weekdays shape the traffic).
DEMO_REFERENCE_START = "2026-10-01"
DEFAULT_DB = "data/tarq.duckdb"
# The paper's setting: 19 days of logs train a model tested on the next day; L = 50 behaviours.
TRAIN_DAYS = 19
SEQ_LEN = 50

# Ids (user, item) seen fewer times in the training window map to OOV: one sighting gives an
# embedding row that a day of training barely moves from its random start.
MIN_COUNT = 2
# A catalog whose items mostly share their semantic-ID tuple has collapsed (seen: 7 distinct
# tuples for 1.2M items); honest collisions (items the model cannot tell apart) stay far below.
MAX_COLLISION_RATE = 0.5
# Warm runs: the most items whose ID tuple may change against the served table in one day.
# With sticky IDs (STICKY_MARGIN) a warm demo day moves under 1 % of the tuples; plain
# nearest-entry codes moved 17–41 %, and a re-index (a cold retrain, or a warm run at the cold
# learning rate) 78–100 %.
MAX_CHURN = 0.05
# Warm runs: sticky semantic IDs. An item keeps its served code at a level unless the nearest
# entry is closer by more than this × the residual's norm (tarq.model.quantizer.sticky_choice).
# Measured on make demo's two warm days: tuple churn 39.5 % / 35.4 % plain, 0.9 % / 0.6 % at
# 0.02, 0.45 % / 0.27 % at 0.05, 0.15 % / 0.06 % at 0.1 (benchmarks/README "Sticky IDs").
STICKY_MARGIN = 0.05
# Retention: run dates whose work folders and model artifacts are kept whole (older ones keep
# only what a champion, challenger, kept publication or warm-start parent needs). Two weeks of
# the demo's small preset is ~1 GB of work folders; a month of medium would be ~14 GB.
KEEP_DAYS = 14
# A warm run's Adam learning rate: a tenth of a cold run's (TrainConfig.lr = 2e-3).
WARM_LR = 2e-4
# A warm run also replays this % of the window's older days (a fixed hash sample): better on
# 6 of 6 warm days measured (+0.004 AUC on average), for 2.5× the warm run's rows.
REPLAY_FOLDS = 10
# The open-loop replay of a demo test day scores at most this many of its requests (a fixed
# random sample of them; every request on `small`, ~1,000 a day): on `large` (~100k requests
# a day × 1,000 candidates × 5 models) scoring them all took longer than the rest of the day.
REPLAY_MAX_REQUESTS = 5000
