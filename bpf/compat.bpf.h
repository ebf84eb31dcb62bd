/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * compat.bpf.h: every shim for kernel drift the heat probes need, in one place.
 * Feature probes (CO-RE field/type existence), never kernel version numbers.
 */
#ifndef HOTSHARD_BPF_COMPAT_H
#define HOTSHARD_BPF_COMPAT_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/*
 * Linux 6.17 ("mm: introduce memdesc_flags_t") wrapped page and folio flags
 * in a struct: folio->flags.f. Before, folio->flags was a plain unsigned long.
 */
struct folio___flags_ulong {
	unsigned long flags;
} __attribute__((preserve_access_index));

/*
 * Before Linux 6.6 ("mm: free up a word in the first tail page") the folio
 * order was a byte of its own, folio->_folio_order; since then it is the low
 * byte of folio->_flags_1.
 */
struct folio___order_byte {
	unsigned char _folio_order;
} __attribute__((preserve_access_index));

#define HEAT_PG_HEAD_BIT 6 /* enum pageflags PG_head, read through CO-RE below */

static __always_inline unsigned long heat_folio_flags(struct folio *folio)
{
	if (bpf_core_type_exists(memdesc_flags_t))
		return BPF_CORE_READ(folio, flags.f);
	return BPF_CORE_READ((struct folio___flags_ulong *)folio, flags);
}

/* Pages in the folio: 1 << folio_order(folio). */
static __always_inline __u32 heat_folio_nr_pages(struct folio *folio)
{
	unsigned long head_bit = bpf_core_enum_value_exists(enum pageflags, PG_head)
				     ? bpf_core_enum_value(enum pageflags, PG_head)
				     : HEAT_PG_HEAD_BIT;
	unsigned int order;

	if (!(heat_folio_flags(folio) & (1UL << head_bit)))
		return 1;
	if (bpf_core_field_exists(struct folio, _flags_1))
		order = BPF_CORE_READ(folio, _flags_1) & 0xff;
	else
		order = BPF_CORE_READ((struct folio___order_byte *)folio, _folio_order);
	return 1U << (order & 31);
}

#endif /* HOTSHARD_BPF_COMPAT_H */
