"""Data access shared by every target: validated file readers and seeded subset helpers."""

from arena.data.io import (
    HOW_TO_PROVIDE,
    check_files,
    count_lines,
    data_file,
    file_summary,
    iter_jsonl,
    normalize_text,
    rand_int,
    read_json,
    read_jsonl,
    sha256_file,
    stable_shuffle,
    stratified_subset,
)

__all__ = [
    "HOW_TO_PROVIDE",
    "check_files",
    "count_lines",
    "data_file",
    "file_summary",
    "iter_jsonl",
    "normalize_text",
    "rand_int",
    "read_json",
    "read_jsonl",
    "sha256_file",
    "stable_shuffle",
    "stratified_subset",
]
