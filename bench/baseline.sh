#!/usr/bin/env bash
# The by-hand baseline of the benchmarks: what a team writes without ShopSet. It gets the rendered
# files for free and only does the git part: clone, replace the files, stage the gitlinks, commit, push.
#   baseline.sh URL FILES_DIR create|update [PATH=COMMIT ...]
set -euo pipefail
url=$1 files=$2 mode=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ "$mode" = create ]; then
  git init -q -b tier-0 "$work"
  git -C "$work" remote add origin "$url"
else
  git clone -q --branch tier-0 "$url" "$work"
fi
find "$work" -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
cp -r "$files"/. "$work"/
cd "$work"
git add -A
for link in "$@"; do
  git update-index --add --cacheinfo "160000,${link#*=},${link%%=*}"
done
git -c user.name=someone -c user.email=someone@example.com commit -q -m "render by hand"
git push -q origin tier-0
