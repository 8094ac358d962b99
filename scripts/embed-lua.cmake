# Embeds lua/*.lua into gen/scripts_gen.{c,h} (and lua/contract.txt into
# gen/contract_gen.h). A script whose first line
# says @prelude is prefixed with the shared library lua/lib/*.lua, so one file
# per script stays readable and the phase rules live once; '@part NAME' on
# the first line prefixes lua/part/NAME.lua (code a few scripts share). Invoked by CMake with -DLUA_DIR=... -DOUT_DIR=...
#
# The prelude opens with the queue scripts' arguments, named from
# lua/contract.txt; the same table makes gen/contract_gen.h for the C side
# (scripts/lua-contract.cmake).
cmake_minimum_required(VERSION 3.18)
include(${CMAKE_CURRENT_LIST_DIR}/lua-contract.cmake)
lua_contract(${LUA_DIR}/contract.txt ${OUT_DIR} prelude)
file(GLOB libs ${LUA_DIR}/lib/*.lua)
list(SORT libs)
foreach(f ${libs})
    file(READ ${f} txt)
    string(APPEND prelude "${txt}\n")
endforeach()
file(GLOB scripts ${LUA_DIR}/*.lua)
list(SORT scripts)
set(h "/* Generated from the lua directory by scripts/embed-lua.cmake: do not edit. */\n")
string(APPEND h "#ifndef STEPQ_SCRIPTS_GEN_H\n#define STEPQ_SCRIPTS_GEN_H\n#include <stddef.h>\n")
string(APPEND h "enum stepq__script_id {\n")
set(c "/* Generated from the lua directory by scripts/embed-lua.cmake: do not edit. */\n")
string(APPEND c "#include \"scripts_gen.h\"\n")
set(table "")
foreach(f ${scripts})
    get_filename_component(name ${f} NAME_WE)
    string(TOUPPER ${name} up)
    string(APPEND h "    STEPQ_SCRIPT_${up},\n")
    file(READ ${f} body)
    # A script opts into the prelude with "@prelude" on its first line.
    string(REGEX MATCH "^[^\n]*@prelude" wants "${body}")
    if(wants)
        set(full "${prelude}${body}")
    else()
        set(full "${body}")
    endif()
    string(REGEX MATCH "^[^\n]*@part [a-z_]+" part "${body}")
    if(part)
        string(REGEX REPLACE ".*@part " "" part "${part}")
        file(READ ${LUA_DIR}/part/${part}.lua ptxt)
        set(full "${ptxt}\n${full}")
    endif()
    file(WRITE ${OUT_DIR}/tmp_${name}.lua "${full}")
    file(READ ${OUT_DIR}/tmp_${name}.lua hex HEX)
    file(REMOVE ${OUT_DIR}/tmp_${name}.lua)
    string(LENGTH "${hex}" hexlen)
    math(EXPR len "${hexlen} / 2")
    string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
    string(APPEND c "static const char s_${name}[] = {${bytes}0};\n")
    string(APPEND table "    {\"${name}\", s_${name}, ${len}},\n")
endforeach()
string(APPEND h "    STEPQ_SCRIPT_COUNT\n};\n")
string(APPEND h "struct stepq__script {\n    const char *name;\n    const char *body;\n    size_t len;\n};\n")
string(APPEND h "extern const struct stepq__script stepq__scripts[STEPQ_SCRIPT_COUNT];\n#endif\n")
string(APPEND c "const struct stepq__script stepq__scripts[STEPQ_SCRIPT_COUNT] = {\n${table}};\n")
file(WRITE ${OUT_DIR}/scripts_gen.h.tmp "${h}")
file(WRITE ${OUT_DIR}/scripts_gen.c "${c}")
# Rewrite the header only when it changes, so an edit to a script body does
# not rebuild every file that includes it.
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different ${OUT_DIR}/scripts_gen.h.tmp
                ${OUT_DIR}/scripts_gen.h)
file(REMOVE ${OUT_DIR}/scripts_gen.h.tmp)
