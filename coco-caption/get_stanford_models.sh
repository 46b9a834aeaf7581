#!/usr/bin/env sh
# Install the Stanford CoreNLP 3.6.0 jars that SPICE needs into pycocoevalcap's spice/lib folder.
#
# Usage: coco-caption/get_stanford_models.sh [PYTHON]
#   PYTHON: the interpreter whose pycocoevalcap should get the jars
#           (default: the repository's .venv/bin/python, else python3).
# Needs internet access (about 400 MB download); does nothing when the jars are already there.
set -eu

CORENLP=stanford-corenlp-full-2015-12-09
JAR=stanford-corenlp-3.6.0
URL="https://nlp.stanford.edu/software/$CORENLP.zip"

ROOT="$(cd "$(dirname "$0")/.." && pwd -P)"
if [ $# -ge 1 ]; then
  PY="$1"
elif [ -x "$ROOT/.venv/bin/python" ]; then
  PY="$ROOT/.venv/bin/python"
else
  PY=python3
fi

SPICELIB="$("$PY" -c 'import os, pycocoevalcap.spice as s; print(os.path.join(os.path.dirname(s.__file__), "lib"))')"

if [ -f "$SPICELIB/$JAR.jar" ] && [ -f "$SPICELIB/$JAR-models.jar" ]; then
  echo "Found Stanford CoreNLP in $SPICELIB"
  exit 0
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "Downloading $URL ..."
if command -v curl >/dev/null 2>&1; then
  curl -fL --retry 3 -o "$TMP/$CORENLP.zip" "$URL"
else
  wget -O "$TMP/$CORENLP.zip" "$URL"
fi

echo "Extracting $JAR.jar and $JAR-models.jar into $SPICELIB ..."
mkdir -p "$SPICELIB"
"$PY" - "$TMP/$CORENLP.zip" "$SPICELIB" "$CORENLP" "$JAR" <<'EOF'
import shutil
import sys
import zipfile

zip_path, lib, folder, jar = sys.argv[1:]
with zipfile.ZipFile(zip_path) as z:
    for name in (f"{jar}.jar", f"{jar}-models.jar"):
        with z.open(f"{folder}/{name}") as src, open(f"{lib}/{name}.part", "wb") as dst:
            shutil.copyfileobj(src, dst)
EOF
mv "$SPICELIB/$JAR-models.jar.part" "$SPICELIB/$JAR-models.jar"
mv "$SPICELIB/$JAR.jar.part" "$SPICELIB/$JAR.jar"  # last: pycocoevalcap only checks this one
echo "Done."
