"""IFEval's dependence on NLTK's punkt tokenizer: find the data, prove it works, and stratify by it.

IFEval without punkt_tab fails late and misleadingly: nltk's offline download "succeeds", and only
the 64 prompts whose checkers count sentences raise, and only for non-empty responses. So
`ensure_punkt` runs those checkers on a fixed text up front and raises a DataError instead, and
IFEval subsets are stratified by `punkt_strata` so a small `limit` still holds those prompts.
"""

from __future__ import annotations

import os
from pathlib import Path

from arena.data.io import hub_offline
from arena.errors import DataError

# IFEval instructions whose checkers call nltk's punkt tokenizer (count_sentences, word_tokenize).
# Without punkt_tab only these prompts fail, and only when the response is non-empty.
PUNKT_INSTRUCTIONS = frozenset({"length_constraints:number_sentences", "change_case:capital_word_frequency"})


def punkt_strata(doc: dict) -> str:
    """IFEval's stratum: 'punkt' for a prompt with a sentence-counting instruction, else 'other'."""
    return "punkt" if PUNKT_INSTRUCTIONS & set(doc.get("instruction_id_list") or ()) else "other"


def ensure_punkt(data_dir: str | None) -> str:
    """Make nltk find punkt_tab (IFEval's sentence counter) and prove it works; returns its folder."""
    import nltk

    if data_dir:
        folder = Path(data_dir) / "nltk_data"
        if folder.is_dir():
            env = os.environ.get("NLTK_DATA", "")
            if str(folder) not in env.split(os.pathsep):
                os.environ["NLTK_DATA"] = os.pathsep.join(p for p in (str(folder), env) if p)
            if str(folder) not in nltk.data.path:
                nltk.data.path.insert(0, str(folder))  # nltk read NLTK_DATA at import time
    try:
        found = nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        if hub_offline():
            where = f"{Path(data_dir) / 'nltk_data'}" if data_dir else "NLTK_DATA or nltk's search path"
            raise DataError(f"IFEval needs the NLTK 'punkt_tab' tokenizer data, not found in {where}; provide "
                            f"<data dir>/nltk_data/tokenizers/punkt_tab (see PROVENANCE.md) or set NLTK_DATA") from None
        nltk.download("punkt_tab", quiet=True)
        found = nltk.data.find("tokenizers/punkt_tab/english/")
    from lm_eval.tasks.ifeval import instructions_util

    n = instructions_util.count_sentences("This is one. This is Mr. Smith's second! And a third?")
    if n != 3 or instructions_util.nltk.word_tokenize("HELLO there") != ["HELLO", "there"]:
        raise DataError(f"punkt_tab at {found} loads but splits sentences wrongly ({n} instead of 3)")
    return str(found)
