"""RouteLLM's published router results on the same strong/weak pair, to compare against."""

from __future__ import annotations

from typing import Any

#: Where each figure comes from. The RouteLLM paper is Ong et al., "RouteLLM: Learning to Route
#: LLMs with Preference Data", arXiv:2406.18665 (2024), Section 5, one table per benchmark
#: (GPT-4-1106-preview vs Mixtral-8x7B-Instruct, contaminated prompts removed, as here).
#: The paper's routers were trained on Chatbot Arena preference data (plus augmentation), not on
#: the benchmark itself, while ours are cross-validated on the benchmark: an in-domain setting.
#: Paper figures marked "approx." were transcribed from memory of the paper, not copied from a
#: file in this repository: check the paper before quoting them elsewhere.
SOURCES = {
    "paper": "Ong et al., RouteLLM, arXiv:2406.18665, Sec. 5 (tables for MT Bench, MMLU, GSM8K)",
    "data-readme": "../shared/data/routellm/README.md (shipped with the evaluation data)",
}

#: Per dataset: rows of (router, training data, metric values, source, note).
PUBLISHED: dict[str, list[dict[str, Any]]] = {
    "mt-bench": [
        {"router": "RouteLLM random", "apgr": 0.500, "cpt50": 0.490, "cpt80": 0.781,
         "source": "paper", "note": "approx."},
        {"router": "RouteLLM MF (arena+judge)", "apgr": 0.802, "cpt50": 0.134, "cpt80": 0.313,
         "source": "paper", "note": "approx.; best MT Bench router"},
    ],
    "mmlu": [
        {"router": "RouteLLM random", "apgr": 0.500, "share_for_95pct_strong": 0.68,
         "source": "data-readme", "note": "random needs ~68 % strong calls for 95 %"},
        {"router": "RouteLLM best (arena+MMLU gold)", "apgr": 0.60,
         "share_for_95pct_strong": 0.55, "source": "paper+data-readme",
         "note": "APGR approx.; 95 % share from the data README"},
    ],
    "gsm8k": [
        {"router": "RouteLLM random", "apgr": 0.500, "share_for_95pct_strong": 0.80,
         "source": "data-readme", "note": "random needs ~80 % strong calls for 95 %"},
        {"router": "RouteLLM best (arena+judge)", "apgr": 0.62,
         "share_for_95pct_strong": 0.65, "source": "paper+data-readme",
         "note": "APGR approx.; 95 % share from the data README"},
    ],
}
