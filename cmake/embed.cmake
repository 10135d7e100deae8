# Embeds a file into C as a byte array (no xxd needed):
#   cmake -DIN=<file> -DOUT=<file.c> -DSYMBOL=<name> -DHEADER=<header> -P cmake/embed.cmake
# defines `const unsigned char SYMBOL[]` (NUL-terminated) and `const size_t SYMBOL_len`
# (without the NUL).
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
# 16 bytes a line
string(REPEAT "0x[0-9a-f][0-9a-f]," 16 line16)
string(REGEX REPLACE "(${line16})" "\\1\n" body "${body}")
get_filename_component(name "${IN}" NAME)
file(WRITE "${OUT}.tmp"
     "/* Generated from ${name} by cmake/embed.cmake at build time: do not edit. */\n"
     "#include \"${HEADER}\"\n\n"
     "const unsigned char ${SYMBOL}[] = {\n${body}0x00};\n"
     "const size_t ${SYMBOL}_len = ${len};\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
