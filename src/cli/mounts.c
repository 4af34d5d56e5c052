// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The overlay mounts of this mount namespace: the kernel's (type overlay)
 * and lamina's (type fuse.lamina), read from /proc/self/mountinfo.
 */
#include "cli.h"
#include "stack.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void mount_free(struct cli_mount *m)
{
	free(m->mountpoint);
	free(m->fstype);
	free(m->mount_options);
	free(m->super_options);
}

/*
 * Parse one mountinfo line: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS
 * [OPTIONAL...] - TYPE SOURCE SUPER_OPTIONS". Returns 1 for an overlay
 * or lamina mount, 0 for any other line.
 */
static int parse_line(char *line, struct cli_mount *m)
{
	char *sep = strstr(line, " - "), *save = NULL, *field[6], *type, *super;
	int i;

	if (!sep)
		return 0;
	*sep = '\0';
	field[0] = strtok_r(line, " ", &save);
	for (i = 1; i < 6 && field[i - 1]; i++)
		field[i] = strtok_r(NULL, " ", &save);
	save = NULL;
	type = strtok_r(sep + 3, " ", &save);
	strtok_r(NULL, " ", &save); /* the source */
	super = strtok_r(NULL, " ", &save);
	if (!field[5] || !type ||
	    (strcmp(type, "overlay") && strcmp(type, "fuse.lamina")))
		return 0;
	m->mountpoint = strdup(field[4]);
	m->fstype = strdup(type);
	m->mount_options = strdup(field[5]);
	m->super_options = strdup(super ? super : "");
	if (!m->mountpoint || !m->fstype || !m->mount_options ||
	    !m->super_options) {
		mount_free(m);
		return -ENOMEM;
	}
	cli_unescape_octal(m->mountpoint);
	return 1;
}

static int mounts_add(struct cli_mount **mounts, size_t *count,
		      const struct cli_mount *m)
{
	struct cli_mount *grown =
	    realloc(*mounts, (*count + 1) * sizeof(**mounts));

	if (!grown)
		return -ENOMEM;
	grown[(*count)++] = *m;
	*mounts = grown;
	return 0;
}

/* Every overlay and lamina mount, in mount order; 0 or a negative errno. */
int cli_mounts_read(struct cli_mount **mounts, size_t *count)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	struct cli_mount m;
	int err = 0, found;

	*mounts = NULL;
	*count = 0;
	if (!f)
		return -errno;
	while (!err && getline(&line, &cap, f) > 0) {
		line[strcspn(line, "\n")] = '\0';
		memset(&m, 0, sizeof(m));
		found = parse_line(line, &m);
		if (found < 0)
			err = found;
		else if (found && mounts_add(mounts, count, &m)) {
			mount_free(&m);
			err = -ENOMEM;
		}
	}
	free(line);
	fclose(f);
	if (err) {
		cli_mounts_free(*mounts, *count);
		*mounts = NULL;
		*count = 0;
	}
	return err;
}

void cli_mounts_free(struct cli_mount *mounts, size_t count)
{
	size_t i;

	for (i = 0; i < count; i++)
		mount_free(&mounts[i]);
	free(mounts);
}

/* The topmost mount on path (absolute, canonical), or NULL. */
const struct cli_mount *cli_mounts_find(const struct cli_mount *mounts,
					size_t count, const char *path)
{
	const struct cli_mount *found = NULL;
	size_t i;

	for (i = 0; i < count; i++)
		if (!strcmp(mounts[i].mountpoint, path))
			found = &mounts[i];
	return found;
}

const char *cli_mountpoint_advice(int err)
{
	switch (err) {
	case ENOENT:
		return "create the directory first";
	case ENOTCONN:
	case ECONNABORTED: /* the same, for a connection over io_uring */
		return "a FUSE mount whose daemon has ended is still there; remove it with lamina umount (or umount -l), then mount again";
	case EACCES:
		return "this user cannot reach it; fix the permissions of the directories above it";
	default:
		return "give an existing directory";
	}
}
