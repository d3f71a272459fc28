// ESLint for the chat page's scripts (static/chat), run by `make lint-js` from the
// repository's root. The page's modules are ES modules in the browser; theme.js is a
// classic script (it must run before the first paint). Vendored code is not ours.
import js from "@eslint/js";
import globals from "globals";
import manifestImports from "./manifest-imports.js";

export default [
  { ignores: ["**/vendor/**"] },
  js.configs.recommended,
  {
    files: ["**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: { ...globals.browser },
    },
    plugins: { chat: { rules: { "manifest-imports": manifestImports } } },
    rules: {
      "chat/manifest-imports": "error",
      eqeqeq: ["error", "always"],
      "no-implicit-coercion": ["error", { allow: ["!!"] }],
      "no-shadow": "error",
      "no-use-before-define": ["error", { functions: false, classes: true, variables: true }],
      "prefer-const": "error",
      "no-var": "error",
      "object-shorthand": "error",
      "no-console": ["error", { allow: ["error", "warn"] }],
      "no-alert": "off",
      "max-lines": ["error", { max: 400, skipBlankLines: true, skipComments: true }],
    },
  },
  {
    files: ["**/theme.js"],
    languageOptions: { sourceType: "script" },
  },
];
