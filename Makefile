# SPDX-License-Identifier: GPL-2.0
#
# nova-mm: out-of-tree kernel module, GPU model, reference kernel and tests.
#
#   make            build the module with its self-tests (against the reference kernel);
#                   NOVA_MM_SELFTESTS=n: the product alone; KDIR=/path/to/build: the product
#                   against that kernel
#   make run        boot a guest with a GA102 and a GH100 model, load the module, show results
#   make shell      the same guest with an interactive shell (CHIPS="tu102 gh100:bar1=1G")
#   make check      every test; prints "N passed, N failed" last; non-zero exit on failure
#   make bench      page-table benchmarks: MMIO counts against the theoretical minimum
#   make soak       long reliability runs on the debug kernel (200 load cycles, hostile devices, unplugs)
#   make clean

.PHONY: all modules run shell check bench soak clean kernel setup model

ifneq ($(KDIR),)
# Building against a kernel given by the user: plain kbuild, on the host; the product alone
# unless NOVA_MM_SELFTESTS=y (which needs CONFIG_KUNIT).
all modules:
	$(MAKE) -C $(KDIR) M=$(CURDIR) NOVA_MM_SELFTESTS=$(or $(NOVA_MM_SELFTESTS),n) modules
clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) clean
else
all modules:
	scripts/build-module.sh
clean:
	rm -rf build
endif

setup:
	scripts/setup.sh

kernel:
	scripts/build-kernel.sh

model:
	scripts/build-model.sh

run:
	scripts/run.sh

shell:
	scripts/shell.sh

check:
	scripts/check.sh

bench:
	scripts/bench.sh

soak:
	scripts/soak.sh
