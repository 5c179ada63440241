#!/usr/bin/env bash
# Check the upstream patch series (upstream/README.md) from a clean clone:
#   1. download the mergekit 0.1.5 sdist and check its sha256;
#   2. `git apply --check`, then apply, every patch in order;
#   3. add our test helper (tests/common.py is missing from the sdist) and run mergekit's whole suite on
#      the patched tree: 0 failed, and more tests than the stock tree collects;
#   4. a layerwise_seg merge by the patched plain mergekit-yaml (plugin hook off) must be bit-identical to
#      the plugin's merge on stock mergekit, for the same recipe (BatchNorm models, `buffers: pooled`);
#   5. the plugin's mergekit_compat installs no workaround on the patched tree;
#   6. the plugin's tests against the patched mergekit: by default the files that exercise mergekit (about
#      4 minutes on 2 cores); PLUGIN_TESTS=tests runs the whole suite (about 15 minutes more);
#   7. the same tests against mergekit with only the first half of the series (0001-0008): each workaround
#      is detected on its own, so a release that takes some of the patches works too.
# Runs in the project's environment (python with layerseg-merge and its test extras installed; PYTHON=...
# picks another interpreter). MERGEKIT_SDIST=FILE uses a downloaded sdist. Works in a temporary folder,
# removed at the end.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-python}"
SHA256=caa51dbbfa493bcd62218d17f2bc7bb1c7a2a2e4baf4e2f34a29d73c66c594aa
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
unset PYTHONPATH
step() { printf '\n== %s\n' "$*"; }
in_tree() { PYTHONPATH="$WORK/$1" "${@:2}"; }  # run with the stock or the patched mergekit first on the path

step "1. sdist"
if [ -n "${MERGEKIT_SDIST:-}" ]; then
    cp "$MERGEKIT_SDIST" "$WORK/mergekit-0.1.5.tar.gz"
else
    "$PY" -m pip download -q --no-binary :all: --no-deps -d "$WORK" mergekit==0.1.5
fi
echo "$SHA256  $WORK/mergekit-0.1.5.tar.gz" | sha256sum -c -
for tree in stock patched half; do
    mkdir "$WORK/$tree"
    tar xzf "$WORK/mergekit-0.1.5.tar.gz" -C "$WORK/$tree" --strip-components=1
done

step "2. patches"
for patch in "$HERE"/0*.patch; do
    git -C "$WORK/patched" apply --check "$patch"
    git -C "$WORK/patched" apply "$patch"
    echo "applied $(basename "$patch")"
done

for patch in "$HERE"/000[1-8]-*.patch; do git -C "$WORK/half" apply "$patch"; done

step "3. mergekit's suite"
for tree in stock patched; do cp "$HERE/tests_common.py" "$WORK/$tree/tests/common.py"; done
collected() { (cd "$WORK/$1" && in_tree "$1" env LAYERSEG_MERGE_NO_HOOK=1 "$PY" -m pytest --collect-only -q \
    -p no:cacheprovider tests | tail -1 | grep -o '^[0-9]*'); }
stock=$(collected stock)
patched=$(collected patched)
echo "collected: stock $stock, patched $patched"
[ "$patched" -gt "$stock" ] || { echo "the patched tree has no more tests than stock"; exit 1; }
(cd "$WORK/patched" && in_tree patched env LAYERSEG_MERGE_NO_HOOK=1 "$PY" -m pytest -q -p no:cacheprovider \
    -W ignore::DeprecationWarning tests)

step "4. bit identity: patched mergekit-yaml (no plugin) vs the plugin on stock mergekit"
mkdir "$WORK/bits"
"$PY" "$HERE/bit_identity.py" prepare "$WORK/bits" 2>/dev/null
(cd "$WORK/bits" && in_tree stock env -u LAYERSEG_MERGE_NO_HOOK \
    "$PY" -c "from layerseg_merge.cli import main; main()" merge recipe.yaml plugin_stock)
(cd "$WORK/bits" && in_tree patched env LAYERSEG_MERGE_NO_HOOK=1 \
    "$PY" -m mergekit.scripts.run_yaml recipe.yaml upstream_patched --no-copy-tokenizer --quiet)
"$PY" "$HERE/bit_identity.py" compare "$WORK/bits/plugin_stock" "$WORK/bits/upstream_patched"

step "5. workarounds installed by the plugin"
for tree in stock patched; do
    printf '%s: ' "$tree"
    in_tree "$tree" env -u LAYERSEG_MERGE_NO_HOOK "$PY" -c \
        "import mergekit.merge, layerseg_merge; layerseg_merge.register()
from layerseg_merge.plugin.compat import active; print(active() or 'none')"
done
in_tree patched env -u LAYERSEG_MERGE_NO_HOOK "$PY" -c \
    "import mergekit.merge, layerseg_merge; layerseg_merge.register()
from layerseg_merge.plugin.compat import active; assert not active(), active()"

step "6. the plugin's tests on the patched mergekit"
MERGEKIT_FACING="tests/test_mergekit_compat.py tests/test_merge.py tests/test_strict_recipes.py
    tests/test_recipe_checks.py tests/test_cross_host.py tests/test_engine.py tests/test_card.py tests/test_hub.py
    tests/test_startup.py"
# shellcheck disable=SC2086  # lists of paths
(cd "$ROOT" && in_tree patched "$PY" -m pytest -q -p no:cacheprovider ${PLUGIN_TESTS:-$MERGEKIT_FACING})

step "7. the plugin's tests on mergekit with half of the series (0001-0008)"
printf 'half: '
in_tree half env -u LAYERSEG_MERGE_NO_HOOK "$PY" -c \
    "import mergekit.merge, layerseg_merge; layerseg_merge.register()
from layerseg_merge.plugin.compat import active; print(active())"
# shellcheck disable=SC2086  # lists of paths
(cd "$ROOT" && in_tree half "$PY" -m pytest -q -p no:cacheprovider $MERGEKIT_FACING)

step "upstream/check.sh: all checks passed"
