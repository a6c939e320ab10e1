"""Known answers of the project's sample data (rates.sample, the default 57,000 prices).

tests/integration/test_contract.py checks these against an oracle computed from the
generated rows; the other tests use them as the answer a healthy service gives. They live
in sample_answer.json so that the NixOS VM tests and the GitHub workflow, which cannot
import this module, read the same answer.
"""

import json
from pathlib import Path

_ANSWER = json.loads((Path(__file__).with_name("sample_answer.json")).read_text())
JANUARY: str = _ANSWER["path"]
JANUARY_BODY: dict = _ANSWER["body"]
