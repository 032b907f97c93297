#!/bin/sh
# make_corpus.sh - writes the seed corpus again (tests/fuzz/make_corpus.c). The regress-*
# inputs (crashes that were fixed) in the corpus folders are kept.
cd "$(dirname "$0")/../.." || exit 2
mkdir -p build
cc -std=c99 -O1 -I. tests/fuzz/make_corpus.c -lm -o build/make_corpus && build/make_corpus tests/fuzz/corpus
