// A small command-line parser shared by the binaries: "--name value", "--name=value" and
// boolean "--name". Unknown flags and missing values are errors that name the flag.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace lockstep {

class Flags {
 public:
  // Declares a flag taking a value. `def` is used when the flag is absent.
  void Value(const std::string& name, std::string def, std::string help);
  // Declares a boolean flag (present = true).
  void Bool(const std::string& name, std::string help);

  // Parses argv[start..argc). Positional arguments are collected in order. "--" ends flags.
  Status Parse(int argc, char** argv, int start = 1);
  // Sets a value as if given on the command line, unless it was given there. Used by
  // --config files, whose keys are the flag names.
  Status SetDefault(const std::string& name, const std::string& value);

  const std::string& Get(const std::string& name) const;
  bool GetBool(const std::string& name) const;
  bool Given(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }
  std::string Usage() const;

 private:
  struct Spec {
    std::string value;
    std::string help;
    std::string def;
    bool is_bool = false;
    bool given = false;
  };
  std::map<std::string, Spec> specs_;
  std::vector<std::string> order_;
  std::vector<std::string> positional_;
};

}  // namespace lockstep
