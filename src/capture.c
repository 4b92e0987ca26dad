/* Placeholder until the capture reader lands: refuses every file. */
#include <errno.h>
#include "capture.h"
#include "macro.h"
int capture_read(const char *path, struct capture *ret, char **error) { *ret = (struct capture){}; *error = xstrdup("stub"); return -EINVAL; }
void capture_free(struct capture *c) { (void)c; }
