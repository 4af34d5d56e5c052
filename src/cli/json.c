// SPDX-License-Identifier: GPL-2.0-or-later
/* Strings in the output of the layer commands: JSON, plain text and
 * mount options. */
#include "stack.h"

#include <stddef.h>
#include <stdio.h>

/*
 * The length of the valid UTF-8 sequence at p, or 0 when p starts none:
 * no overlong forms, no surrogates and nothing above U+10FFFF.
 */
static size_t utf8_length(const unsigned char *p)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

/*
 * A JSON string literal. A byte that is not part of valid UTF-8 becomes
 * the escape of the lone surrogate U+DC80 to U+DCFF, as Python's
 * "surrogateescape" error handler writes it, so the output stays JSON
 * and os.fsencode() gives back the original bytes.
 */
void json_string(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len;

	fputc('"', f);
	while (*p) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", f);
		else if (*p == '\t')
			fputs("\\t", f);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else if ((len = utf8_length(p)) == 0)
			fprintf(f, "\\udc%02x", *p);
		else {
			fwrite(p, 1, len, f);
			p += len;
			continue;
		}
		p++;
	}
	fputc('"', f);
}

/* A path on one line of text output: control characters and backslashes
 * are written as octal escapes, as in /proc/self/mountinfo. */
void text_path(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	for (; *p; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '\\')
			fprintf(f, "\\%03o", *p);
		else
			fputc(*p, f);
	}
}

/* Write a path as a value in the mount options, with a backslash before
 * each backslash, colon and comma in it. */
void option_path(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == ':' || *s == ',')
			fputc('\\', f);
		fputc(*s, f);
	}
}
