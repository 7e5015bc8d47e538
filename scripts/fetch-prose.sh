#!/usr/bin/env bash
# scripts/fetch-prose.sh: fetch the prose haystack of the evaluation tasks
# (src/eval/haystack.c): the English text of the Debian Administrator's
# Handbook, from the Debian package debian-handbook (GPL-2+ or CC-BY-SA-3.0).
#
# Downloads the .deb with apt-get (nothing is installed), unpacks it in a
# temporary folder, follows the book's chapters in reading order (each page's
# "next" link, from index.html) and keeps the running text: the contents of
# DocBook's <div class="para">, tags stripped, entities decoded, whitespace
# collapsed, code listings (<pre>) and navigation dropped, and only paragraphs
# that end a sentence. Writes one paragraph per line, a blank line between
# paragraphs, to $STRATA_CACHE (default ~/.cache/strata)/prose/debian-handbook.txt,
# with the package's copyright file beside it (debian-handbook.copyright) and
# the package version and SHA-256 (debian-handbook.source). Does nothing when
# the text is already there. Prints the text's path.
set -euo pipefail
cache=${STRATA_CACHE:-$HOME/.cache/strata}
folder="$cache/prose"
text="$folder/debian-handbook.txt"
if [ -s "$text" ] && [ -s "$folder/debian-handbook.copyright" ]; then
    echo "$text"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# apt-get download writes into the current folder; the package lists may be
# missing on a fresh machine, so update them once if the first try fails.
if ! (cd "$tmp" && apt-get download -q debian-handbook >&2); then
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    echo "fetch-prose: apt-get download failed; updating the package lists and trying again" >&2
    $sudo apt-get update -q >&2
    (cd "$tmp" && apt-get download -q debian-handbook >&2)
fi
deb=$(ls "$tmp"/debian-handbook_*.deb)
dpkg-deb -x "$deb" "$tmp/root"
html="$tmp/root/usr/share/doc/debian-handbook/html/en-US"
if [ ! -f "$html/index.html" ]; then
    echo "fetch-prose: $deb has no $html/index.html; the package's layout changed" >&2
    exit 1
fi

mkdir -p "$folder"
python3 - "$html" "$text.partial" <<'PYTHON'
"""Turn the handbook's English HTML pages into plain paragraphs."""
import html.parser
import os
import re
import sys

source, output = sys.argv[1], sys.argv[2]


class Paragraphs(html.parser.HTMLParser):
    """Collects the text of <div class="para"> elements, innermost first.

    A para may hold lists whose items are paras of their own: the outer text
    gathered so far becomes a paragraph when an inner one opens, so no text
    is counted twice. Text inside <pre> (screens, program listings) is
    dropped, as is everything outside paras (titles, navigation, index)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.divs = []          # for each open <div>: is it a para?
        self.buffers = []       # text of each open para, innermost last
        self.pre_depth = 0
        self.paragraphs = []
        self.next_page = None

    def flush(self):
        if self.buffers:
            self.paragraphs.append("".join(self.buffers[-1]))
            self.buffers[-1] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "link" and attributes.get("rel") == "next":
            self.next_page = attributes.get("href")
        elif tag == "div":
            is_para = "para" in (attributes.get("class") or "").split()
            if is_para:
                self.flush()
                self.buffers.append([])
            self.divs.append(is_para)
        elif tag == "pre":
            self.pre_depth += 1

    def handle_endtag(self, tag):
        if tag == "div" and self.divs:
            if self.divs.pop():
                self.flush()
                self.buffers.pop()
        elif tag == "pre" and self.pre_depth > 0:
            self.pre_depth -= 1

    def handle_data(self, data):
        if self.buffers and self.pre_depth == 0:
            self.buffers[-1].append(data)


def clean(paragraph):
    paragraph = paragraph.replace("\u00a0", " ").replace("\u200b", "")
    return re.sub(r"\s+", " ", paragraph).strip()


def is_prose(paragraph):
    """Running text: long enough, with lower-case words, ending a sentence."""
    if len(paragraph) < 60 or not re.search(r"[a-z]{3}", paragraph):
        return False
    return re.search(r"[.!?][\"'\u201d)]?$", paragraph) is not None


pages, seen, page = [], set(), "index.html"
while page and page not in seen and os.path.exists(os.path.join(source, page)):
    seen.add(page)
    pages.append(page)
    parser = Paragraphs()
    with open(os.path.join(source, page), encoding="utf-8") as stream:
        parser.feed(stream.read())
    parser.close()
    kept = [p for p in (clean(p) for p in parser.paragraphs) if is_prose(p)]
    pages[-1] = kept
    page = parser.next_page.split("#")[0] if parser.next_page else None

paragraphs = [p for kept in pages for p in kept]
if len(paragraphs) < 500:
    sys.exit(f"fetch-prose: only {len(paragraphs)} paragraphs found in {source}; expected thousands")
with open(output, "w", encoding="utf-8") as stream:
    stream.write("\n\n".join(paragraphs) + "\n")
print(f"fetch-prose: {len(pages)} pages, {len(paragraphs)} paragraphs", file=sys.stderr)
PYTHON

cp "$tmp/root/usr/share/doc/debian-handbook/copyright" "$folder/debian-handbook.copyright"
{
    echo "package: $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
    echo "sha256: $(sha256sum "$deb" | cut -d' ' -f1)"
    echo "licence: GPL-2.0+ or CC-BY-SA-3.0 (see debian-handbook.copyright)"
} > "$folder/debian-handbook.source"
mv "$text.partial" "$text"
echo "$text"
