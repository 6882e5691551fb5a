// The Catch2 v2 main, compiled once into its own static library (it takes ~40 s at -O2).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
