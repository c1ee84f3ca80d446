"""Explore's views show themselves: NSP pairs and masked sentences as escaped HTML, statistics as tables."""

from __future__ import annotations

from workbench.data.masking import ACTION_MASK, ACTION_NONE, ACTION_RANDOM
from workbench.notebook.explore import (
    MaskView,
    PairsView,
    mask_html,
    pair_html,
    pair_view,
    pairs_view,
    stats_frame,
    stats_table,
)

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


class _Tokenizer:
    tokens = ["[CLS]", HOSTILE, "cat", "[SEP]", "sat", "[SEP]"]

    def convert_ids_to_tokens(self, ids):
        return [self.tokens[i] for i in ids]


EXAMPLE = {"input_ids": [0, 1, 2, 3, 4, 5], "token_type_ids": [0, 0, 0, 0, 1, 1], "next_sentence_label": 1}


def test_pair_view_shows_segments_and_label_escaped():
    view = pair_view(_Tokenizer(), EXAMPLE)
    assert view.segments == [0, 0, 0, 0, 1, 1] and view.label == 1 and "NotNext" in view.caption
    page = view._repr_html_()
    assert HOSTILE not in page and ESCAPED in page and "6 tokens" in page
    assert page == pair_html(_Tokenizer(), EXAMPLE)  # the string function is the same view
    many = pairs_view(_Tokenizer(), [EXAMPLE, {"input_ids": [0, 2, 3]}])
    assert isinstance(many, PairsView) and len(many.pairs) == 2
    assert many.pairs[1].label == -100 and "packed MLM segment" in many._repr_html_()


def test_mask_view_shows_itself_escaped_with_its_numbers():
    view = MaskView(["[CLS]", HOSTILE, "cat", "[SEP]"], ["[CLS]", "[MASK]", HOSTILE, "[SEP]"],
                    [ACTION_NONE, ACTION_MASK, ACTION_RANDOM, ACTION_NONE], 2)
    page = view._repr_html_()
    assert page == mask_html(view)
    assert HOSTILE not in page and ESCAPED in page
    assert "2 of 2 tokens predicted (100.0%)" in page


def test_stats_table_keeps_stats_frame_values():
    stats = {"documents": 3, "is_next_fraction": 0.512345678, HOSTILE: "x"}
    table = stats_table(stats, "Corpus")
    assert table.frame.equals(stats_frame(stats))
    page = table._repr_html_()
    assert "0.5123" in page and HOSTILE not in page and ESCAPED in page
