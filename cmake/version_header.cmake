# Writes OUT, a header defining LOCKSTEP_COMMIT, from `git rev-parse` in SOURCE_DIR, and only
# when its contents change, so that a new commit rebuilds version.cc and nothing else does.
execute_process(
  COMMAND git rev-parse --short=12 HEAD
  WORKING_DIRECTORY "${SOURCE_DIR}"
  OUTPUT_VARIABLE commit
  OUTPUT_STRIP_TRAILING_WHITESPACE
  ERROR_QUIET
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR commit STREQUAL "")
  set(commit "unknown")
endif()
execute_process(
  COMMAND git status --porcelain --untracked-files=no
  WORKING_DIRECTORY "${SOURCE_DIR}"
  OUTPUT_VARIABLE dirty
  ERROR_QUIET)
if(NOT dirty STREQUAL "" AND NOT commit STREQUAL "unknown")
  set(commit "${commit}-modified")
endif()
set(contents "#define LOCKSTEP_COMMIT \"${commit}\"\n")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL contents)
  file(WRITE "${OUT}" "${contents}")
endif()
