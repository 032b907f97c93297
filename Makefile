# cnn.h - build, test, demo.  `make test` runs the whole suite; `make demo`
# trains the tutorial network on the offline default dataset (Fashion-MNIST).
CC       ?= gcc
# Plain -O2 is enough: cnn.h picks its kernels (AVX-512, AVX2, NEON, portable) at run time and
# compiles them, and the augmentation's resample, for each instruction set whatever the flags
# (bench/kernel_paths.sh measures -O2 against -O3 -march=native; see README, CPU kernels)
CFLAGS   ?= -O2
OMPFLAGS ?= -fopenmp
WARN      = -Wall -Wextra
HEADERS   = cnn.h cnn_augment.h cnn_opencl.h
EXAMPLES  = examples/cifar10_cnn examples/evaluate examples/predict examples/augment_preview \
            examples/tiny_step examples/inspect
# With OpenCL's and CLBlast's headers installed, the examples also take
# --device opencl (cnn_opencl.h) and examples/devices is built; without them
# everything builds and runs on the CPU.
OPENCL   := $(shell test -f /usr/include/CL/cl.h && test -f /usr/include/clblast_c.h && echo yes)
ifeq ($(OPENCL),yes)
EXAMPLES += examples/devices
CLFLAGS   = -DCNN_EXAMPLES_OPENCL -D_POSIX_C_SOURCE=200809L
CLLIBS    = -lOpenCL -lclblast
endif
DEMO_EPOCHS ?= 5

.PHONY: all test demo examples deps bench clean windows fuzz fault install uninstall

all: examples

deps:
	@scripts/ensure-deps.sh

examples: deps $(EXAMPLES)

# a stamp that names whether OpenCL was found: examples built before it was
# installed (or after it was removed) are built again
OPENCL_STAMP = build/.opencl-$(if $(OPENCL),yes,no)
$(OPENCL_STAMP):
	@mkdir -p build && rm -f build/.opencl-* && touch $@

examples/%: examples/%.c $(HEADERS) $(wildcard examples/*.h) $(OPENCL_STAMP)
	$(CC) -std=c99 $(CFLAGS) $(OMPFLAGS) $(CLFLAGS) $(WARN) -I. $< $(CLLIBS) -lm -lpthread -o $@

# The suite: unit tests (optimised with OpenMP, then under ASan/UBSan),
# compile checks (C99, C11, C++, clang, CNN_STATIC), the drop-in build and the
# examples. Ends with "N passed, N failed".
test:
	@scripts/ensure-deps.sh test
	@$(MAKE) --no-print-directory $(EXAMPLES)
	@tests/run.sh

# The fuzz targets (tests/fuzz: model files, IDX and gzip, CIFAR-10, NumPy .npy and .npz, images and image
# folders, OpenCL device choices) under libFuzzer with ASan and UBSan, FUZZ_SECONDS each
# (default 60); `make test` replays their corpus. Ends with a table of runs and findings.
# The long fault runs: every allocation failing in turn along the whole pipeline (also with
# worker threads), 300 SIGKILLs while saving; under the sanitizers (make test runs a shorter set)
fault:
	@scripts/ensure-deps.sh
	@tests/fault.sh

FUZZ_SECONDS ?= 60
fuzz:
	@scripts/ensure-deps.sh fuzz
	@FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh

bench/train_bench: bench/train_bench.c cnn.h tests/tutorial_net.h
	$(CC) -std=c99 $(CFLAGS) $(OMPFLAGS) $(WARN) -I. $< -lm -o $@

bench/augment_bench: bench/augment_bench.c cnn.h cnn_augment.h
	$(CC) -std=c99 $(CFLAGS) $(OMPFLAGS) $(WARN) -I. $< -lm -lpthread -o $@

bench/peak: bench/peak.c
	$(CC) -std=c99 $(CFLAGS) $(OMPFLAGS) $(WARN) $< -o $@

# the core tests built for Windows (MinGW-w64) and run under wine
windows:
	@scripts/ensure-deps.sh windows
	@tests/windows.sh

# cnn.h against PyTorch, side by side; figures go to bench/README.md
bench: bench/train_bench bench/peak bench/augment_bench examples
	@scripts/ensure-deps.sh bench
	@bench/run_bench.sh

# make install PREFIX=/usr/local (DESTDIR=/staging for packagers): the headers into
# $(PREFIX)/include, pkg-config files cnn.pc (cnn.h, cnn_augment.h) and cnn_opencl.pc
# (cnn_opencl.h) into $(PREFIX)/share/pkgconfig (the library is headers only), the
# examples' sources (and tools/*.py) as documentation into $(PREFIX)/share/cnn. Then:
#   cc -std=c99 main.c $$(pkg-config --cflags --libs cnn)
# cnn_augment.h includes <stb/stb_image.h>, which Debian's libstb-dev puts under
# /usr/include (a default path, so cnn.pc needs no -I for it); with stb elsewhere, give
# the folder holding stb/: make install STB_CFLAGS=-I/opt/include.
# make uninstall (the same PREFIX and DESTDIR) removes what install put, by the list
# it wrote: $(PREFIX)/share/cnn/installed-files.
PREFIX       ?= /usr/local
INCLUDEDIR   ?= $(PREFIX)/include
DATADIR      ?= $(PREFIX)/share/cnn
PKGCONFIGDIR ?= $(PREFIX)/share/pkgconfig
STB_CFLAGS   ?=
VERSION      := $(shell sed -n 's/^\#define CNN_VERSION "\([^"]*\)".*/\1/p' cnn.h)
DOCS          = $(wildcard examples/*.c examples/*.h)
TOOLS         = $(wildcard tools/*.py)
D             = $(DESTDIR)

install:
	install -d $(D)$(INCLUDEDIR) $(D)$(PKGCONFIGDIR) $(D)$(DATADIR)/examples
	install -m 644 $(HEADERS) $(D)$(INCLUDEDIR)/
	install -m 644 $(DOCS) $(D)$(DATADIR)/examples/
	$(if $(TOOLS),install -d $(D)$(DATADIR)/tools && install -m 755 $(TOOLS) $(D)$(DATADIR)/tools/)
	printf '%s\n' 'prefix=$(PREFIX)' 'includedir=$(INCLUDEDIR)' 'datadir=$(DATADIR)' '' \
	  'Name: cnn' 'Description: cnn.h and cnn_augment.h: convolutional neural networks in C headers, the Keras way' \
	  'Version: $(VERSION)' 'Cflags: -I$${includedir} -fopenmp$(if $(STB_CFLAGS), $(STB_CFLAGS))' 'Libs: -fopenmp -lm -lpthread' \
	  > $(D)$(PKGCONFIGDIR)/cnn.pc
	printf '%s\n' 'prefix=$(PREFIX)' 'includedir=$(INCLUDEDIR)' '' \
	  'Name: cnn_opencl' 'Description: cnn_opencl.h: the OpenCL backend of cnn.h (CLBlast GEMM, several devices)' \
	  'Version: $(VERSION)' 'Requires: cnn' 'Cflags: -I$${includedir}' 'Libs: -lOpenCL -lclblast' \
	  > $(D)$(PKGCONFIGDIR)/cnn_opencl.pc
	chmod 644 $(D)$(PKGCONFIGDIR)/cnn.pc $(D)$(PKGCONFIGDIR)/cnn_opencl.pc
	printf '%s\n' $(addprefix $(INCLUDEDIR)/,$(HEADERS)) $(PKGCONFIGDIR)/cnn.pc $(PKGCONFIGDIR)/cnn_opencl.pc \
	  $(addprefix $(DATADIR)/examples/,$(notdir $(DOCS))) $(addprefix $(DATADIR)/tools/,$(notdir $(TOOLS))) \
	  $(DATADIR)/installed-files > $(D)$(DATADIR)/installed-files

uninstall:
	@if [ -f $(D)$(DATADIR)/installed-files ]; then \
	  while read -r f; do rm -f "$(D)$$f"; done < $(D)$(DATADIR)/installed-files; \
	  rmdir $(D)$(DATADIR)/examples $(D)$(DATADIR)/tools 2>/dev/null; rmdir $(D)$(DATADIR) 2>/dev/null; \
	  echo "removed cnn from $(D)$(PREFIX)"; \
	else echo "cnn is not installed under $(D)$(PREFIX) ($(D)$(DATADIR)/installed-files is missing)"; fi

demo: examples
	examples/cifar10_cnn --augment --epochs $(DEMO_EPOCHS) --save demo.cnn --history demo.csv --plot demo.png

clean:
	rm -rf build $(EXAMPLES) examples/devices bench/train_bench bench/peak bench/augment_bench demo.cnn demo.csv demo.png
