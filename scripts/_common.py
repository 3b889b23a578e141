"""What every conversion script of ``scripts/`` does the same way around its own conversion:
one ``error:`` line and exit status 2 on bad input, else the result as one JSON line and one
summary line, exit status 0.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable


def run(convert_call: Callable[[], dict[str, Any]], label: str = "{arch}",
        parity_what: str = "the PyTorch reference") -> int:
  """Runs ``convert_call`` and reports it.

  Args:
    convert_call: the script's conversion with its arguments bound; returns a dict with
      ``arch``, ``params``, ``outdir`` and ``parity_max_abs`` (None when torch is missing).
    label: how the summary line names the model, formatted with the result's entries.
    parity_what: what the parity figure compares with.

  Returns:
    0, or 2 after one ``<script>: error: <first line>`` on stderr for a CheckpointError,
    ValueError, RuntimeError, OSError or ImportError.
  """
  from jaxgc.convert import CheckpointError  # pylint: disable=import-outside-toplevel
  try:
    result = convert_call()
  except (CheckpointError, ValueError, RuntimeError, OSError, ImportError) as e:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    print(f"{os.path.basename(sys.argv[0])}: error: {text}", file=sys.stderr)
    return 2
  err = result["parity_max_abs"]
  print(json.dumps(result))
  print(f"{label.format(**result)}: {result['params']:,} params -> {result['outdir']}; "
        f"parity vs {parity_what}: "
        + ("torch not installed, skipped" if err is None else f"max |jaxgc - torch| = {err:.3g}"))
  return 0
