// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Whether a live mount uses an upper directory: a lamina daemon holds a
 * flock on it, and a kernel overlay mount names it in mountinfo. The
 * layer commands refuse to change an upper that a mount is using.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* Undo the kernel's octal escapes (\040 and the like) in place. */
void cli_unescape_octal(char *s)
{
	char *out = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*out++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
					(s[3] - '0'));
			s += 3;
		} else {
			*out++ = *s;
		}
	}
	*out = '\0';
}

/* The value of key= in a mountinfo option list, unescaped, or NULL. */
static char *option_value(const char *options, const char *key, char *buf,
			  size_t size)
{
	size_t klen = strlen(key);
	const char *p = options, *end;

	while (p && *p) {
		end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		if ((size_t)(end - p) > klen && !strncmp(p, key, klen) &&
		    p[klen] == '=' && (size_t)(end - p - klen) < size) {
			memcpy(buf, p + klen + 1, end - p - klen - 1);
			buf[end - p - klen - 1] = '\0';
			cli_unescape_octal(buf);
			return buf;
		}
		p = *end ? end + 1 : NULL;
	}
	return NULL;
}

/* A kernel overlay mount whose upperdir is upper: its mount point. */
static bool kernel_overlay_uses(const char *upper, char *mnt, size_t size)
{
	char *line = NULL, *fields[4] = {NULL}, *sep, value[PATH_MAX];
	size_t cap = 0;
	bool found = false;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	int i;

	if (!f)
		return false;
	while (!found && getline(&line, &cap, f) > 0) {
		line[strcspn(line, "\n")] = '\0';
		sep = strstr(line, " - ");
		if (!sep)
			continue;
		*sep = '\0';
		/* After the separator: type, source, super options. */
		fields[0] = strtok(sep + 3, " ");
		for (i = 1; i < 3 && fields[i - 1]; i++)
			fields[i] = strtok(NULL, " ");
		if (!fields[0] || !fields[2] || strcmp(fields[0], "overlay"))
			continue;
		if (!option_value(fields[2], "upperdir", value,
				  sizeof(value)) ||
		    strcmp(value, upper))
			continue;
		/* Fifth field before the separator: the mount point. */
		strtok(line, " ");
		for (i = 0; i < 3; i++)
			strtok(NULL, " ");
		fields[3] = strtok(NULL, " ");
		snprintf(mnt, size, "%s", fields[3] ? fields[3] : "?");
		cli_unescape_octal(mnt);
		found = true;
	}
	free(line);
	fclose(f);
	return found;
}

/*
 * 1 when a mount uses upperdir, with a sentence that says which in why;
 * 0 when none does; a negative errno when upperdir cannot be opened.
 */
int cli_upper_in_use(const char *upperdir, char *why, size_t size)
{
	char real[PATH_MAX], mnt[PATH_MAX];
	int fd, busy;

	if (!realpath(upperdir, real))
		return -errno;
	if (kernel_overlay_uses(real, mnt, sizeof(mnt))) {
		snprintf(why, size, "the overlay mount on %s uses %s", mnt,
			 real);
		return 1;
	}
	fd = open(real, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	busy = flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
	close(fd); /* also drops the lock if it was taken */
	if (busy)
		snprintf(why, size, "a lamina mount uses %s", real);
	return busy;
}
