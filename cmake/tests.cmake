# Links @p target with the modules whose public headers @p src includes (confide/<m>.h;
# event.h and err.h belong to core). A test then builds while an unrelated module is broken.
function(cf_link_included target src)
    file(STRINGS ${src} incs REGEX "#include \"confide/[a-z]+\\.h\"")
    set(mods core)
    foreach(line ${incs})
        string(REGEX REPLACE ".*confide/([a-z]+)\\.h.*" "\\1" h "${line}")
        if(h STREQUAL "event" OR h STREQUAL "err")
            set(h core)
        endif()
        list(APPEND mods ${h})
    endforeach()
    cf_link_modules(${target} ${mods})
endfunction()

# Unit tests: tests/unit/<module>.c with its case list in tests/unit/<module>.cases.
# Each line of the .cases file is one case: it becomes a CF_CASE() entry in a generated
# header (the C side) and one ctest (the CMake side), labelled "unit".
file(GLOB CF_UNIT_CASES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/unit/*.cases)
foreach(cases_file ${CF_UNIT_CASES})
    get_filename_component(mod ${cases_file} NAME_WE)
    set(src ${PROJECT_SOURCE_DIR}/tests/unit/${mod}.c)
    if(NOT EXISTS ${src})
        continue()
    endif()
    file(STRINGS ${cases_file} cases REGEX "^[a-z0-9_]+$")
    set(hdr ${CMAKE_BINARY_DIR}/tests/unit/${mod}_cases.h)
    set(content "")
    foreach(c ${cases})
        string(APPEND content "CF_CASE(${c})\n")
    endforeach()
    file(CONFIGURE OUTPUT ${hdr} CONTENT "${content}")
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${cases_file})
    add_executable(test_${mod} ${src})
    target_include_directories(test_${mod} PRIVATE ${PROJECT_SOURCE_DIR}/tests
                               ${CMAKE_BINARY_DIR}/tests/unit ${PROJECT_SOURCE_DIR}/src)
    target_compile_definitions(test_${mod} PRIVATE CF_TEST_CASES="${mod}_cases.h"
                               CF_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
    cf_link_included(test_${mod} ${src})
    foreach(c ${cases})
        add_test(NAME ${mod}.${c} COMMAND test_${mod} ${c}
                 WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
        set_tests_properties(${mod}.${c} PROPERTIES LABELS unit SKIP_RETURN_CODE 77 TIMEOUT 300)
    endforeach()
endforeach()

# Fuzz targets: tests/fuzz/fuzz_<name>.c. With CF_FUZZ=ON they build as libFuzzer binaries;
# otherwise a small driver replays tests/fuzz/corpus/<name>/* under ctest.
file(GLOB CF_FUZZ_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_*.c)
foreach(fsrc ${CF_FUZZ_SOURCES})
    get_filename_component(fname ${fsrc} NAME_WE)
    string(REGEX REPLACE "^fuzz_" "" target ${fname})
    if(CF_FUZZ)
        add_executable(${fname} ${fsrc})
        target_compile_options(${fname} PRIVATE -fsanitize=fuzzer)
        target_link_options(${fname} PRIVATE -fsanitize=fuzzer)
    else()
        add_executable(${fname} ${fsrc} ${PROJECT_SOURCE_DIR}/tests/fuzz/replay_main.c)
        add_test(NAME fuzz.${target}.replay
                 COMMAND ${fname} ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/${target})
        set_tests_properties(fuzz.${target}.replay PROPERTIES LABELS fuzz TIMEOUT 300)
    endif()
    target_include_directories(${fname} PRIVATE ${PROJECT_SOURCE_DIR}/tests ${PROJECT_SOURCE_DIR}/src)
    cf_link_included(${fname} ${fsrc})
endforeach()

# Integration tests: tests/integration/<name>.sh, run with the confide binary's path.
file(GLOB CF_INTEG CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/integration/*.sh)
foreach(script ${CF_INTEG})
    get_filename_component(name ${script} NAME_WE)
    add_test(NAME integration.${name}
             COMMAND bash ${script} $<TARGET_FILE:confide_cli> ${PROJECT_SOURCE_DIR})
    set_tests_properties(integration.${name} PROPERTIES LABELS integration SKIP_RETURN_CODE 77
                         TIMEOUT 900)
endforeach()
