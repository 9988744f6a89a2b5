#include "common/flags.h"

#include <stdexcept>

namespace lockstep {

void Flags::Value(const std::string& name, std::string def, std::string help) {
  specs_[name] = Spec{def, std::move(help), def, false, false};
  order_.push_back(name);
}

void Flags::Bool(const std::string& name, std::string help) {
  specs_[name] = Spec{"", std::move(help), "", true, false};
  order_.push_back(name);
}

Status Flags::Parse(int argc, char** argv, int start) {
  bool flags_done = false;
  for (int i = start; i < argc; ++i) {
    std::string arg = argv[i];
    if (flags_done || arg.size() < 3 || arg.rfind("--", 0) != 0) {
      if (arg == "--") {
        flags_done = true;
        continue;
      }
      positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto it = specs_.find(name);
    if (it == specs_.end()) return InvalidArgument("unknown flag --" + name);
    Spec& spec = it->second;
    if (spec.is_bool) {
      if (inline_value && *inline_value != "true" && *inline_value != "false") {
        return InvalidArgument("flag --" + name + " takes no value");
      }
      spec.value = inline_value.value_or("true");
    } else if (inline_value) {
      spec.value = *inline_value;
    } else {
      if (i + 1 >= argc) return InvalidArgument("flag --" + name + " needs a value");
      spec.value = argv[++i];
    }
    spec.given = true;
  }
  return Status::Ok();
}

Status Flags::SetDefault(const std::string& name, const std::string& value) {
  auto it = specs_.find(name);
  if (it == specs_.end()) return InvalidArgument("unknown key \"" + name + "\"");
  if (!it->second.given) it->second.value = value;
  return Status::Ok();
}

const std::string& Flags::Get(const std::string& name) const {
  auto it = specs_.find(name);
  if (it == specs_.end()) throw std::logic_error("undeclared flag " + name);
  return it->second.value;
}

bool Flags::GetBool(const std::string& name) const { return Get(name) == "true"; }

bool Flags::Given(const std::string& name) const {
  auto it = specs_.find(name);
  return it != specs_.end() && it->second.given;
}

std::string Flags::Usage() const {
  std::string out;
  for (const auto& name : order_) {
    const Spec& s = specs_.at(name);
    out += "  --" + name + (s.is_bool ? "" : " VALUE");
    out += "\n      " + s.help;
    if (!s.is_bool && !s.def.empty()) out += " (default " + s.def + ")";
    out += "\n";
  }
  return out;
}

}  // namespace lockstep
