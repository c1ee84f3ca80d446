"""Short names for encoders and checkpoints: what legends, tables and sentences show instead of paths."""

from __future__ import annotations

import pandas as pd

from workbench.evaluation.probes import gain_sentence, probe_gain
from workbench.evaluation.results import ProbeGain
from workbench.notebook import plots
from workbench.shortnames import label_for, labels_for, short_value

RUN = "/home/ada/workbench/reports/20261203-081200-ab12cd/checkpoint"


def test_labels_of_the_encoders_a_report_compares():
    assert label_for(RUN) == "checkpoint (02)"
    assert label_for(f"random:{RUN}") == "random twin"
    assert label_for("builtin:minilm") == "MiniLM"
    assert label_for("../runs/02_pretraining") == "checkpoint (02)"  # 02's own default out
    assert label_for("/x/runs/02_pretraining/checkpoint-40") == "checkpoint (02, step 40)"
    assert label_for("./runs/agnews-mlm") == "checkpoint (agnews-mlm)"
    for hub in ("bert-base-uncased", "google/bert_uncased_L-2_H-128_A-2"):  # a hub name is already short
        assert label_for(hub) == hub
    assert short_value("</script><script>alert(2)</script>") == "</script><script>alert(2)</script>"  # text, not a path


def test_clashing_labels_name_their_run_folder():
    other = RUN.replace("ab12cd", "ef34gh")
    names = labels_for([RUN, other, f"random:{RUN}", f"random:{other}", "builtin:minilm"])
    assert names[RUN] == "checkpoint (02) in 20261203-081200-ab12cd"
    assert names[f"random:{other}"] == "random twin of checkpoint (02) in 20261203-081200-ef34gh"
    assert len(set(names.values())) == 5 and names["builtin:minilm"] == "MiniLM"


def test_short_values_for_table_cells():
    assert short_value(RUN, "model") == "checkpoint (02)"
    assert short_value("heldout:/data/agnews-mlm") == "heldout:agnews-mlm"
    assert short_value("/data/corpus.txt") == "…/corpus.txt"
    assert short_value("builtin:wikipedia") == "builtin:wikipedia" and short_value(0.15) == "0.15"


def test_sentence_table_and_legend_use_short_labels_and_keep_raw_keys():
    runs = pd.DataFrame([{"init": init, "seed": seed, "layer": 1, "validation_accuracy": 0.5, "test_accuracy": acc,
                          "n_train": 50, "n_test": 500}
                         for init, accs in ((RUN, (0.80, 0.82, 0.84)), (f"random:{RUN}", (0.60, 0.62, 0.64)))
                         for seed, acc in enumerate(accs)])
    gain = probe_gain(runs, RUN, f"random:{RUN}")
    assert gain["model"] == RUN and gain["baseline"] == f"random:{RUN}"  # the dict keeps the raw specs
    assert gain_sentence(gain).startswith("checkpoint (02) against random twin: a measurable gain, +20.0 points")
    headline = pd.DataFrame({"accuracy_mean": [0.82, 0.62]}, index=pd.Index([RUN, f"random:{RUN}"], name="init"))
    page = ProbeGain(gain, headline)._repr_html_()
    assert f'title="{RUN}">checkpoint (02)</th>' in page and f'title="random:{RUN}">random twin</th>' in page
    summary = pd.DataFrame({"init": [RUN, f"random:{RUN}"], "layer": [0, 0], "accuracy_mean": [0.8, 0.6],
                            "accuracy_low": [0.7, 0.5], "accuracy_high": [0.9, 0.7]})
    figure = plots.probe_by_layer(summary)
    assert [t.name for t in figure.data] == ["checkpoint (02)", "random twin"]
    assert RUN in figure.data[0].hovertemplate  # the full path in the tooltip
