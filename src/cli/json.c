// SPDX-License-Identifier: GPL-2.0-or-later
/* Strings in the output of the layer commands: JSON, plain text and
 * mount options. */
#include "stack.h"

#include <stdio.h>

/* A JSON string literal. Bytes that are not valid UTF-8 pass as they
 * are, so a path with such bytes gives JSON that strict parsers reject. */
void json_string(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	fputc('"', f);
	for (; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", f);
		else if (*p == '\t')
			fputs("\\t", f);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
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
