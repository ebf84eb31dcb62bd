// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * probe_empty.bpf.c: the floor under the heat probes' cost. The same four
 * filemap tracepoints as bpf/heat.bpf.c, attached the same way (tp_btf), with
 * programs that return at once: what a read pays for the tracepoint being
 * enabled and a BPF program being run at all, before any of our code.
 * Built and loaded by tools/bench/probe_overhead.sh (probe_empty_loader.c).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("tp_btf/mm_filemap_get_pages")
int empty_get_pages(void *ctx)
{
	return 0;
}

SEC("tp_btf/mm_filemap_map_pages")
int empty_map_pages(void *ctx)
{
	return 0;
}

SEC("tp_btf/mm_filemap_fault")
int empty_fault(void *ctx)
{
	return 0;
}

SEC("tp_btf/mm_filemap_add_to_page_cache")
int empty_add_to_page_cache(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
