// SPDX-License-Identifier: GPL-2.0-or-later
/* The names of the generic mount flags, as mount(8) writes them. */
#include "mountflags.h"

#include <stdio.h>
#include <string.h>
#include <sys/mount.h>

static const struct {
	unsigned long flag;
	const char *name;
} flag_names[] = {
    {MS_RDONLY, "ro"},	       {MS_NOSUID, "nosuid"},
    {MS_NODEV, "nodev"},       {MS_NOEXEC, "noexec"},
    {MS_SYNCHRONOUS, "sync"},  {MS_DIRSYNC, "dirsync"},
    {MS_NOATIME, "noatime"},   {MS_NODIRATIME, "nodiratime"},
    {MS_RELATIME, "relatime"}, {MS_STRICTATIME, "strictatime"},
    {MS_LAZYTIME, "lazytime"},
};

void mount_flags_append(char *buf, size_t size, unsigned long flags)
{
	size_t i, len = strlen(buf), need;

	for (i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++) {
		if (!(flags & flag_names[i].flag))
			continue;
		need = strlen(flag_names[i].name) + 1;
		if (len + need >= size)
			continue;
		snprintf(buf + len, size - len, ",%s", flag_names[i].name);
		len += need;
	}
}
