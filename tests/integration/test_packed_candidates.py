"""Retrieve's packed answer (scores as float32 bytes) carries exactly the plain answer's candidates and
scores over a real candidate_svc, and the ranker's reader takes either form."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from recsys.cluster import start_cluster
from recsys.rpc.remote import retrieved_scores
from recsys.v1 import candidates_pb2, candidates_pb2_grpc

pytestmark = pytest.mark.integration


def test_packed_and_plain_answers_carry_the_same_candidates(small_bundle, tmp_path):
    with start_cluster(small_bundle, port=0, metrics=False, log_dir=tmp_path) as c, \
            grpc.insecure_channel(c.services["candidate_svc"].address) as ch:
        retrieve = candidates_pb2_grpc.CandidateRetrieverStub(ch).Retrieve
        for history in (["i1", "i2", "i3"], [], ["i7"]):  # with history, cold (NaN-heavy columns)
            req = dict(user_id="u1", history=history, n=300)
            plain = retrieve(candidates_pb2.RetrieveRequest(**req), timeout=10)
            packed = retrieve(candidates_pb2.RetrieveRequest(**req, packed=True), timeout=10)
            assert not plain.scores_le32 and not packed.scores and len(plain.item_ids) > 100
            assert list(packed.item_ids) == list(plain.item_ids)
            assert list(packed.source_masks) == list(plain.source_masks)
            assert list(packed.fresh_rows) == list(plain.fresh_rows)
            names = len(plain.score_names)
            a, b = retrieved_scores(plain, names), retrieved_scores(packed, names)
            assert a.shape == (len(plain.item_ids), names) and np.isnan(a).any()
            np.testing.assert_array_equal(a, b)  # NaN where the other is NaN, the same bits elsewhere
            assert a.tobytes() == b.tobytes()


def test_a_packed_answer_of_the_wrong_size_is_refused():
    resp = candidates_pb2.RetrieveResponse(item_ids=["a", "b"], score_names=["s"], scores_le32=b"\0" * 4)
    with pytest.raises(ValueError, match="score bytes"):
        retrieved_scores(resp, 1)
