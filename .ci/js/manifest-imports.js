// A local ESLint rule for the page's modules. In production, Django's manifest storage
// (config/storage.py) rewrites each module's `import ... from "./x.js"` to the hashed
// name by regular expression, not by parsing: the words `import` or `export` followed
// by a space or `{` in a comment above an import start a second match that ends on the
// same import, and its URL is hashed twice ("./boot.<hash>.<hash>.js", a 404).
const WORD = /(import|export)[\s{]/;

function endOfLastImport(program) {
  let end = -1;
  for (const node of program.body) {
    const fromModule = node.type === "ImportDeclaration" || ((node.type === "ExportNamedDeclaration" || node.type === "ExportAllDeclaration") && node.source);
    if (fromModule) end = node.range[1];
  }
  return end;
}

export default {
  meta: {
    type: "problem",
    docs: { description: "No `import `/`export ` in comments above a module's last import (Django's manifest rewrites them)" },
    messages: {
      word: "Comment above an import says `{{word}}`: Django's manifest storage would hash that import's URL twice. Reword it.",
    },
    schema: [],
  },
  create(context) {
    return {
      "Program:exit"(program) {
        const end = endOfLastImport(program);
        for (const comment of context.sourceCode.getAllComments()) {
          const match = comment.range[0] < end && WORD.exec(comment.value);
          if (match) context.report({ loc: comment.loc, messageId: "word", data: { word: match[1] } });
        }
      },
    };
  },
};
