/* The public header compiles on its own, as C11, with nothing before it. */
#include <stoa/stoa.h>

int main(void)
{
        return stoa_strerror(STOA_E_FOREIGN)[0] ? 0 : 1;
}
