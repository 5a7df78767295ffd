#include "cli.hpp"

int main(int argc, char** argv) { return drb::cli::run(argc, argv); }
