/* The text of names clients give us: user ids and platform ids
 * (daemon/names.c). */
#pragma once

#include <stddef.h>

/* What is wrong with the n bytes of s as the text of a name, or NULL when
 * nothing is: not UTF-8, a control character (C0, DEL, C1) or a line or
 * paragraph separator (U+2028, U+2029). The reason is a constant string
 * for InvalidArgument. */
const char *name_text_problem(const char *s, size_t n);
