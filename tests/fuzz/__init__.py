"""Hypothesis fuzzing of what a hostile guest or file can reach (issue 12).

Targets (tests/fuzz/targets.py): every device through the board's buses, the
generic device round trip over the board's device table, the image loaders,
the snapshot reader (byte flips and semantic edits) and the hypercall ABI.
pytest runs each with a bounded number of cases (tests/fuzz/test_fuzz.py);
`python -m tests.fuzz --cases N` runs N cases of each and prints the counts.
"""
