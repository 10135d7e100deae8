/* Included once, at the end of a unit-test file: the case table and main(). */
typedef struct {
    const char *name;
    void (*fn)(void);
} cf_test_case;

#define CF_CASE(x) {#x, test_##x},
static const cf_test_case cf_test_cases[] = {
#include CF_TEST_CASES
};
#undef CF_CASE

int main(int argc, char **argv)
{
    size_t n = sizeof(cf_test_cases) / sizeof(cf_test_cases[0]);
    int ran = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], cf_test_cases[i].name) != 0) {
            continue;
        }
        int before = cf_test_failures;
        cf_test_cases[i].fn();
        fprintf(stderr, "%s %s\n", cf_test_failures == before ? "ok  " : "FAIL",
                cf_test_cases[i].name);
        ran++;
    }
    if (ran == 0) {
        fprintf(stderr, "no such case: %s\n", argc > 1 ? argv[1] : "(none)");
        return 1;
    }
    return cf_test_failures == 0 ? 0 : 1;
}
