/* Prints the README's configuration table from the one list in core/config.h.
 * `make test` checks that README.md contains exactly this output. */
#include <stdio.h>

#include "config.h"

#define STR_BOOL(d) ((d) ? "1" : "0")

int main(void) {
  printf("| variable | default | meaning |\n|---|---|---|\n");
#define ROW_BOOL(name, d, help) printf("| `SHMSHIM_%s` | `%s` | %s |\n", #name, STR_BOOL(d), help);
#define ROW_UINT(name, d, help) printf("| `SHMSHIM_%s` | `%d` | %s |\n", #name, (int)(d), help);
#define ROW_SIZE(name, d, help) printf("| `SHMSHIM_%s` | `%d` | %s |\n", #name, (int)(d), help);
#define ROW_STR(name, d, help) printf("| `SHMSHIM_%s` | %s | %s |\n", #name, (d)[0] ? "`" d "`" : "(empty)", help);
#define ROW(name, kind, d, help) ROW_##kind(name, d, help)
  SHM_CONFIG_VARS(ROW)
  return 0;
}
