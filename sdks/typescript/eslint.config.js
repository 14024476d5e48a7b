// @ts-check
import eslint from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'eslint.config.js'] },
  eslint.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      // It narrows fields across awaits (a `stopping` flag set by stop() reads as "always false"), and it
      // objects to the checks that guard against handlers written in plain JavaScript.
      '@typescript-eslint/no-unnecessary-condition': 'off',
      // `() => log(...)` callbacks are clearer than braces around a single call.
      '@typescript-eslint/no-confusing-void-expression': 'off',
    },
  },
  {
    // node:test's describe() and test() return promises the runner itself awaits.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-floating-promises': 'off' },
  },
);
