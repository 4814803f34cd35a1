#!/usr/bin/env python3
"""Make assets/text/default_en.txt.gz, the English text built into Quantscope for calibration and evaluation.

    python3 tools/make_default_text.py [--source eighty.txt] [--out assets/text/default_en.txt.gz]
    python3 tools/make_default_text.py --pydoc      # the fallback: CPython's pydoc topics (PSF licence)

Source: "Around the World in Eighty Days" by Jules Verne (English translation by George Makepeace Towle,
1873), Project Gutenberg EBook #103, public domain in the USA. A copy ships as data/eighty.txt inside the
crate esaxx-rs 0.1.10 on crates.io (a dependency of the `tokenizers` crate, so it is in Cargo.lock and in
cargo's cache after any build). The script reads it from cargo's cache ($CARGO_HOME/registry/cache/*/
esaxx-rs-0.1.10.crate or the unpacked registry/src/*/esaxx-rs-0.1.10/), else downloads the .crate file from
the crates.io download endpoint that cargo itself uses; the .crate's sha256 is checked against the checksum
in Cargo.lock.

Cleaning: only the text between the "*** START OF" and "*** END OF" lines (the Project Gutenberg header,
licence and trademark are dropped, so what remains is the public-domain novel alone); the table of contents,
"Chapter N" lines, the all-capitals chapter titles and the closing "End of Project Gutenberg's ..." line are
dropped; each paragraph (lines between blank lines)
is joined into one line with single spaces. Output: UTF-8, one paragraph per line, gzip with mtime 0 (the
same bytes every run).
"""
import argparse, gzip, hashlib, io, glob, os, re, sys, tarfile, urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CRATE, VERSION = "esaxx-rs", "0.1.10"
CRATE_SHA256 = "d817e038c30374a4bcb22f94d0a8a0e216958d4c3dcde369b1439fec4bdda6e6"  # Cargo.lock's checksum
CRATE_URL = f"https://static.crates.io/crates/{CRATE}/{CRATE}-{VERSION}.crate"
MEMBER = f"{CRATE}-{VERSION}/data/eighty.txt"


def cargo_home():
    return os.environ.get("CARGO_HOME") or os.path.join(os.path.expanduser("~"), ".cargo")


def from_crate_bytes(data, where):
    h = hashlib.sha256(data).hexdigest()
    if h != CRATE_SHA256:
        sys.exit(f"{where}: sha256 {h} is not Cargo.lock's {CRATE_SHA256}")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
        return t.extractfile(MEMBER).read().decode("utf-8-sig"), where


def find_source():
    for p in glob.glob(os.path.join(cargo_home(), "registry", "cache", "*", f"{CRATE}-{VERSION}.crate")):
        return from_crate_bytes(open(p, "rb").read(), p)
    for p in glob.glob(os.path.join(cargo_home(), "registry", "src", "*", f"{CRATE}-{VERSION}", "data", "eighty.txt")):
        return open(p, encoding="utf-8-sig").read(), p
    print(f"downloading {CRATE_URL}", file=sys.stderr)
    with urllib.request.urlopen(CRATE_URL, timeout=60) as r:
        return from_crate_bytes(r.read(), CRATE_URL)


def clean_gutenberg(raw):
    raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    start = re.search(r"^\*\*\* ?START OF.*$", raw, re.M)
    end = re.search(r"^\*\*\* ?END OF.*$", raw, re.M)
    body = raw[start.end():end.start()]
    # the novel starts at the first "Chapter I"; what comes before is the title and the contents
    body = body[re.search(r"^Chapter I\s*$", body, re.M).start():]
    paras = []
    for block in re.split(r"\n\s*\n", body):
        p = " ".join(block.split())
        if not p:
            continue
        if re.fullmatch(r"Chapter [IVXLC]+\.?", p) or re.match(r"End of (the )?Project Gutenberg", p):
            continue
        letters = [c for c in p if c.isalpha()]
        if letters and all(c.isupper() for c in letters):  # chapter titles, "THE END"
            continue
        paras.append(p)
    return paras


def from_pydoc():
    """Fallback: the prose of CPython's pydoc topics (Lib/pydoc_data/topics.py, PSF licence)."""
    from pydoc_data.topics import topics
    paras = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            lines = block.split("\n")
            if any(l.startswith(" ") for l in lines):      # code, grammar, indented tables
                continue
            lines = [l for l in lines if not re.fullmatch(r"[*=\-~^]+", l.strip())]
            p = " ".join(" ".join(lines).split())
            if len(p) >= 80 and p[-1] in ".:)\"'" and sum(c.isalpha() for c in p) > 0.6 * len(p):
                paras.append(p)
    return paras


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", help="a Project Gutenberg plain-text file to use instead")
    ap.add_argument("--pydoc", action="store_true", help="use CPython's pydoc topics instead (fallback)")
    ap.add_argument("--out", default=os.path.join(REPO, "assets", "text", "default_en.txt.gz"))
    a = ap.parse_args()
    if a.pydoc:
        paras, where = from_pydoc(), "pydoc_data.topics"
    else:
        if a.source:
            raw, where = open(a.source, encoding="utf-8-sig").read(), a.source
        else:
            raw, where = find_source()
        paras = clean_gutenberg(raw)
    text = "\n".join(paras) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as g:
            g.write(text.encode("utf-8"))
    print(f"{where}: {len(paras)} paragraphs, {len(text.encode('utf-8'))} bytes, {len(text.split())} words "
          f"-> {a.out} ({os.path.getsize(a.out)} bytes)")


if __name__ == "__main__":
    main()
