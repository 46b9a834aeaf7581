"""README commands expand the intended shell variables; LICENSE and CITATION.cff match the project."""
import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_readme_shell_variables_are_the_documented_ones():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    names = {m.group(1) or m.group(2) for b in blocks for m in re.finditer(r"\$\{(\w+)\}|\$([A-Za-z_]\w*)", b)}
    assert names <= {"REWARD"}, f"unexpected shell variables in README commands: {sorted(names - {'REWARD'})}"


def test_license_and_citation_match_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["version"] == project["version"]
    paper = cff["preferred-citation"]
    assert paper["title"] == "Fine-grained Image Captioning with CLIP Reward" and paper["year"] == 2022
