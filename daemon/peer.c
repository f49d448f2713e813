/* The peer of a connection: see peer.h.
 *
 * Why the kernel's view and nothing else. An administrator is uid 0 or a
 * process in daemon.admin_group. "In the group" is what the process holds:
 * its gid and its supplementary groups, which the kernel records when it
 * connects (SO_PEERCRED, SO_PEERGROUPS) and which nobody can change
 * afterwards. The user database says something else: which groups a user
 * would get at its next login. Deciding from it (the primary group of the
 * uid's passwd entry, getgrouplist()) gave admin to a process that had
 * dropped the group (setgroups, setpriv --clear-groups, a service with
 * SupplementaryGroups= unset), and made an NSS lookup per connection. The
 * group's name is resolved to a gid once per configuration, by the caller.
 *
 * SO_PEERGROUPS (Linux 4.13) reports ERANGE with the size it needs when the
 * buffer is short; we start with room for 64 groups and grow once.
 */
#include "peer.h"

#include <assert.h>
#include <errno.h>
#include <grp.h>
#include <stdlib.h>
#include <string.h>

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

static int peer_groups_read(int fd, struct peer_cred *p) {
        socklen_t len = 64 * sizeof(gid_t);

        for (int tries = 0; tries < 3; tries++) {
                gid_t *groups = malloc(len ? len : sizeof(gid_t));

                if (!groups)
                        return -ENOMEM;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0) {
                        p->groups = groups;
                        p->n_groups = len / sizeof(gid_t);
                        return 0;
                }
                free(groups);
                if (errno != ERANGE || len > PEER_MAX_GROUPS * sizeof(gid_t))
                        return -errno;
                /* len now holds the size the kernel needs. */
        }
        return -ERANGE;
}

int peer_cred_read(int fd, struct peer_cred *ret) {
        socklen_t sl = sizeof ret->ucred;
        int r;

        assert(fd >= 0 && ret);
        *ret = (struct peer_cred){0};
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &ret->ucred, &sl) < 0)
                return -errno;
        if (sl != sizeof ret->ucred)
                return -EIO;
        r = peer_groups_read(fd, ret);
        if (r < 0) {
                peer_cred_clear(ret);
                return r;
        }
        return 0;
}

void peer_cred_clear(struct peer_cred *p) {
        free(p->groups);
        p->groups = NULL;
        p->n_groups = 0;
}

int peer_admin_group_resolve(const char *name, struct peer_admin_group *ret) {
        struct group grbuf, *gr = NULL;
        size_t size = 1024;

        *ret = (struct peer_admin_group){0};
        if (!name || !*name)
                return -ENOENT;
        for (;;) {
                char *buf = malloc(size);
                int r;

                if (!buf)
                        return -ENOMEM;
                r = getgrnam_r(name, &grbuf, buf, size, &gr);
                if (r == ERANGE && size < (1u << 20)) {
                        free(buf);
                        size *= 4;
                        continue;
                }
                if (r == 0 && gr)
                        *ret = (struct peer_admin_group){.exists = true, .gid = gr->gr_gid};
                free(buf);
                if (r != 0)
                        return -r;
                return gr ? 0 : -ENOENT;
        }
}

bool peer_is_admin(const struct peer_cred *p, const struct peer_admin_group *g) {
        assert(p && g);
        if (p->ucred.uid == 0)
                return true;
        if (!g->exists)
                return false;
        if (p->ucred.gid == g->gid)
                return true;
        for (size_t i = 0; i < p->n_groups; i++)
                if (p->groups[i] == g->gid)
                        return true;
        return false;
}
