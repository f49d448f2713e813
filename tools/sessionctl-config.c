/* `sessionctl config`: the guide's configuration manager.
 *
 * First version: option parsing only, so that the build configures while the
 * configuration library is being written; the verbs follow in the next commits.
 */
#include <stdio.h>

#include "sessionctl.h"

int sessionctl_config(int argc, char **argv, const struct sessionctl_globals *g) {
        (void) argc;
        (void) argv;
        (void) g;
        fputs("sessionctl config: not available in this build yet\n", stderr);
        return SESSIONCTL_EXIT_FAILURE;
}
