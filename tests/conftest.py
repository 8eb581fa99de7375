import sys
from pathlib import Path

# Test helpers (doubles, lab fixtures) import by bare name; the repo root stays off
# sys.path so that only the installed `pycalico` namespace is importable.
sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["lab_fixtures", "etcd_fixtures", "kdd_fixtures"]
