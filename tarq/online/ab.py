"""Model rankers for the closed-loop A/B of the demo world (:mod:`tarq.data.demo_ab`).

:class:`ModelRanker` scores an A/B request's candidate pool with a trained model the way the
open-loop replay and evaluation do (:func:`tarq.training.batch_scoring.score_batch`: the user side once
per request, TARQ with the semantic IDs of the table it was published with). The request's
features are built from the world's state at the request, in the sample schema and encoded by
:func:`tarq.data.loader.to_batch` with the model's vocabularies — the same encoding as
training: the user's row of the warehouse's ``users`` table, the catalog row of each candidate
(``semantic_ids/catalog``), and the history the simulator holds for the user (its last
``seq_len`` behaviours strictly before the request, oldest first, with their times).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from tarq.data.demo import _Simulator
from tarq.data.demo_world import ACTIONS
from tarq.data.loader import SampleSet, encode_fields, to_batch
from tarq.ids.churn import ItemCodes
from tarq.model.io import load_for_scoring
from tarq.model.tarq import TarqModel
from tarq.online.replay import catalog as read_catalog
from tarq.store import sqlfiles
from tarq.store.warehouse import open_db
from tarq.training.batch_scoring import score_candidates

ROWS_PER_CALL = 32768  # candidate rows scored in one score_batch call


class ModelRanker:
    """Scores A/B pools with the trained model in ``model_dir`` (a :data:`tarq.data.demo_ab.
    Ranker`); ``item_codes``: TARQ's published semantic IDs (None: nearest entries)."""

    def __init__(
        self,
        model_dir: Path,
        db_path: Path,
        item_codes: ItemCodes | None = None,
        name: str = "",
    ) -> None:
        mdir = Path(model_dir)
        self.model, self.layout, vocabs = load_for_scoring(mdir)
        self.name = name or mdir.name
        self.sset = SampleSet(mdir, self.layout, vocabs)
        cat = read_catalog(db_path)
        self.cat_ids = cat.column("item_id").to_numpy().astype(np.int64)  # sorted
        self.catalog = cat.select(self.layout.item_fields)
        self.item_feats = torch.from_numpy(encode_fields(cat, self.layout.item_fields, vocabs))
        with open_db(db_path, read_only=True) as con:
            users = con.sql(sqlfiles.load_sql("demo/users")).to_arrow_table()
        self.user_ids = users.column("user_id").to_numpy().astype(np.int64)  # sorted
        self.users = users.select(self.layout.user_fields)
        self.codes = item_codes if isinstance(self.model, TarqModel) else None
        self._world_rows: tuple[np.ndarray, np.ndarray, torch.Tensor | None] | None = None

    def _rows(self, sim: _Simulator) -> tuple[np.ndarray, np.ndarray, torch.Tensor | None]:
        """Per world index: catalog row of each item, users-table row of each user, and
        (TARQ) each item's published codes (−1 rows: not in the table)."""
        if self._world_rows is None:
            w = sim.w
            item_rows = np.searchsorted(self.cat_ids, w.item_id)
            user_rows = np.searchsorted(self.user_ids, w.user_id)
            if (self.cat_ids[np.minimum(item_rows, self.cat_ids.size - 1)] != w.item_id).any():
                raise ValueError("the world holds items the warehouse's catalog does not")
            if (self.user_ids[np.minimum(user_rows, self.user_ids.size - 1)] != w.user_id).any():
                raise ValueError("the world holds users the warehouse's users table does not")
            codes = None
            if self.codes is not None:
                codes = torch.from_numpy(self.codes.lookup(w.item_id))
            self._world_rows = (item_rows, user_rows, codes)
        return self._world_rows

    def request_table(self, sim: _Simulator, users: np.ndarray, t_req: np.ndarray) -> pa.Table:
        """(R rows) the requests in the sample schema: user fields, the history lists before
        each request, its time; item fields and label are placeholders (not scored)."""
        w, ring = sim.w, sim.ring
        item_rows, user_rows, _ = self._rows(sim)
        hi, hts, hact = ring.item[users], ring.ts[users], ring.act[users]
        keep = (hi >= 0) & (hts < t_req[:, None])
        # the last seq_len kept, oldest first (the ring is oldest first)
        rank_from_end = np.cumsum(keep[:, ::-1], axis=1)[:, ::-1]
        keep &= rank_from_end <= self.layout.seq_len
        offsets = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32)
        it = hi[keep]

        def lists(values: np.ndarray | pa.Array) -> pa.ListArray:
            return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))

        cols = {
            f: self.users.column(f).take(pa.array(user_rows[users]))
            for f in self.users.column_names
        }
        first = self.catalog.take(pa.array(item_rows[np.zeros(len(users), np.int64)]))
        for f in self.catalog.column_names:
            if f not in cols:
                cols[f] = first.column(f)
        cols.update(
            ts=pa.array(t_req.astype("datetime64[us]")),
            label=pa.array(np.zeros(len(users), np.float32)),
            hist_item_id=lists(w.item_id[it]),
            hist_category_id=lists(w.item_cat[it] + 1),
            hist_brand_id=lists(w.brand_label[w.item_brand[it]]),
            hist_action=lists(np.asarray(ACTIONS, dtype=object)[hact[keep]]),
            hist_ts=lists(hts[keep].astype("datetime64[us]")),
        )
        return pa.table(cols)

    @torch.inference_mode()
    def __call__(
        self,
        sim: _Simulator,
        users: np.ndarray,
        t_req: np.ndarray,
        cand: np.ndarray,
        valid: np.ndarray,
    ) -> np.ndarray:
        """(R, P) float64 logits of the candidates ``cand`` (world item indices) of R requests
        of world users ``users`` at ``t_req`` (µs); −inf where ``valid`` is False."""
        item_rows, _, codes = self._rows(sim)
        req = to_batch(self.request_table(sim, users, t_req), self.sset)
        out = np.full(cand.shape, -np.inf, dtype=np.float64)
        per = max(1, ROWS_PER_CALL // max(cand.shape[1], 1))
        for lo in range(0, len(users), per):
            sl = slice(lo, lo + per)
            rr, cc = np.nonzero(valid[sl])
            items = cand[sl][rr, cc]
            c = codes[torch.from_numpy(items)] if codes is not None else None
            feats = self.item_feats[torch.from_numpy(item_rows[items])]
            logit = score_candidates(self.model, req, rr + lo, feats, c)
            out[rr + lo, cc] = logit.double().numpy()
        return out


def served_tarq(db_path: Path, work_dir: Path) -> tuple[Path, ItemCodes, int]:
    """The warehouse's served TARQ: (model folder of its run date under ``work_dir``, the
    published table's codes, the version), the weights checked against the table's sha256.

    Raises:
        ValueError: nothing is published yet.  ModelMismatchError: the run date's weights are
            not the ones the table was assigned with.
    """
    from tarq.ids.semantic_ids import ids_arrays
    from tarq.serving import check_model_sha, read_publication

    version, reg, table = read_publication(db_path)
    model_dir = Path(work_dir) / str(reg["run_date"]) / "models" / "tarq"
    check_model_sha(
        reg["model_sha256"] or None, model_dir, f"published version {version} of {db_path}"
    )
    item_ids, codes, _ = ids_arrays(table)
    return model_dir, ItemCodes.of(item_ids, codes), version
